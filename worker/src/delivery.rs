//! Sending a shard's planned rows: batching, fleet-wide limits, retries with
//! backoff, `Retry-After`, per-row results and checkpoints.
//!
//! Batches go out concurrently (as far as the fleet limiter and its adaptive
//! window allow), in the plan's order, and answer in any order. Answers are
//! checkpointed continuously (group commit): whenever some are unrecorded and
//! no checkpoint write is under way, a new one starts with all of them. A
//! batch keeps its request slot until a checkpoint holding its answer is
//! written, so an attempt that takes over after a crash resends only batches
//! that held a slot: the batches in flight (invariant 5).
//!
//! A destination that reads an action's batches as one upload session
//! (`Destination::sequenced`, Meta's `session`) gets each run of one action's
//! batches in order: the first alone, the rest once it answered, the last
//! once all the others did. A batch waits for its turn before it takes a
//! request slot, so waiting never holds one.

use crate::adaptive::Signal;
use crate::behaviour::Action;
use crate::destinations::{DeliveryError, Destination, Record, RowResults, SequencePlace};
use crate::diff::{PlannedOp, ShardDiff};
use crate::jobs::JobLog;
use crate::limits::{FleetLimiter, RequestPermit};
use crate::metrics::{Answer, WorkerMetrics};
use ebb_shared::config::BatchLimits;
use ebb_shared::storage::Storage;
use futures::StreamExt;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts at a batch that fails transiently before its rows are failed.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// `429`s tolerated for one batch before its rows are failed.
    pub max_rate_limited: u32,
    /// The longest `Retry-After` waited out; a longer one fails the batch's rows
    /// at once (the next run retries them) instead of parking the run.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            max_rate_limited: 30,
            max_retry_after: ebb_shared::config::DEFAULT_MAX_RETRY_AFTER,
        }
    }
}

/// Batches at most in flight per shard; the fleet limiter decides how many of
/// them really send at once.
const MAX_BATCHES_IN_FLIGHT: usize = 32;

/// What a checkpoint records: every op before `done_through` was answered, and
/// so was every op of the batches in `answered` beyond it (batches answer out
/// of order); `failures` are those of them that were rejected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub done_through: usize,
    pub failures: BTreeMap<usize, String>,
    /// Batches answered beyond `done_through`, by first op: their end.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub answered: BTreeMap<usize, usize>,
}

impl Checkpoint {
    /// Records a batch's answers; `done_through` moves over every batch now
    /// contiguous with it.
    fn record(&mut self, batch: Range<usize>, rows: &[Result<(), String>]) {
        for (i, row) in batch.clone().zip(rows) {
            if let Err(error) = row {
                self.failures.insert(i, error.clone());
            }
        }
        self.answered.insert(batch.start, batch.end);
        while let Some(end) = self.answered.remove(&self.done_through) {
            self.done_through = end;
        }
    }

    fn is_answered(&self, op: usize) -> bool {
        op < self.done_through || self.answered.range(..=op).next_back().is_some_and(|(_, &end)| op < end)
    }

    /// Ops answered: it names the checkpoint's object and grows with every
    /// write, so the furthest checkpoint sorts last.
    fn answered_ops(&self) -> usize {
        self.done_through + self.answered.iter().map(|(start, end)| end - start).sum::<usize>()
    }

    /// What this checkpoint says of a plan of `len` ops: the answered ones
    /// with their outcomes (the rest are `None`).
    fn outcomes(&self, len: usize) -> Vec<Option<Result<(), String>>> {
        (0..len)
            .map(|i| {
                self.is_answered(i).then(|| match self.failures.get(&i) {
                    Some(error) => Err(error.clone()),
                    None => Ok(()),
                })
            })
            .collect()
    }
}

#[derive(Clone)]
pub struct Checkpoints {
    pub storage: Storage,
    pub prefix: String,
    pub attempt: String,
}

impl Checkpoints {
    /// The furthest checkpoint any earlier attempt at this shard wrote.
    pub async fn latest(&self) -> Result<Checkpoint, ebb_shared::storage::StorageError> {
        // The prefix also holds the bulk job log (`jobs/…`), which is no checkpoint.
        let keys = self.storage.list(&self.prefix).await?;
        let Some(last) = keys
            .iter()
            .filter(|key| key.ends_with(".ckpt") && !key[self.prefix.len().min(key.len())..].contains('/'))
            .max()
        else {
            return Ok(Checkpoint::default());
        };
        let bytes = self.storage.get(last).await?;
        Ok(rmp_decode(&bytes).unwrap_or_default())
    }

    async fn write(&self, checkpoint: &Checkpoint) {
        let key = format!("{}{:012}-{}.ckpt", self.prefix, checkpoint.answered_ops(), self.attempt);
        let bytes = ebb_shared::protocol::encode(checkpoint);
        if let Err(error) = self.storage.create(&key, bytes).await {
            // A lost checkpoint costs resends after a crash, never correctness.
            tracing::warn!(%error, "checkpoint not written");
        }
    }
}

fn rmp_decode(bytes: &[u8]) -> Option<Checkpoint> {
    ebb_shared::protocol::decode(bytes).ok()
}

pub struct Delivery<'a> {
    pub destination: &'a dyn Destination,
    pub destination_name: &'a str,
    pub limiter: Arc<FleetLimiter>,
    pub batch: BatchLimits,
    pub retry: RetryPolicy,
    pub checkpoints: Checkpoints,
    /// Ops answered so far, for progress reports.
    pub progress: watch::Sender<u64>,
    /// Set when the run ended (cancelled, failed): nothing more is sent, and
    /// the rows not sent fail with the reason (the next run sends them).
    pub run_ended: Arc<AtomicBool>,
    pub metrics: Arc<WorkerMetrics>,
    /// The live debugger's log of this shard attempt; `None` when the sync
    /// keeps no requests.
    pub requests: Option<Arc<crate::debugger::RequestLog>>,
}

/// The reason rows not sent after their run ended carry.
pub const RUN_ENDED: &str = "not sent: the run ended (cancelled or failed) before this batch went out";

pub struct Delivered {
    /// One answer per planned op.
    pub outcomes: Vec<Result<(), String>>,
    /// Set when the destination stayed unreachable and the remaining rows were
    /// failed without being sent.
    pub destination_error: Option<String>,
}

/// Splits `start..len` into batches of one action, each within the
/// destination's record and byte limits (a record larger than the byte limit
/// travels alone, and the destination answers for it).
fn batches(
    plan: &[PlannedOp],
    start: usize,
    limits: BatchLimits,
    size_of: impl Fn(&PlannedOp) -> usize,
) -> Vec<Range<usize>> {
    let records = limits.records.max(1);
    let mut out = Vec::new();
    let mut begin = start;
    let mut bytes = 0usize;
    for i in start..plan.len() {
        let size = size_of(&plan[i]);
        let full = i - begin == records || bytes.saturating_add(size) > limits.bytes;
        if i > begin && (full || plan[i].action != plan[begin].action) {
            out.push(begin..i);
            begin = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(size);
    }
    if begin < plan.len() {
        out.push(begin..plan.len());
    }
    out
}

/// A batch's place in its upload sequence: a run of consecutive batches of one
/// action (`Destination::sequenced`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InSequence {
    sequence: usize,
    position: usize,
    batches: usize,
    rows: usize,
}

impl InSequence {
    /// Batches of the sequence that must have answered before this one goes:
    /// the first goes alone, the others after it, the last after all of them.
    fn waits_for(&self) -> usize {
        match self.position {
            0 => 0,
            p if p + 1 == self.batches => p,
            _ => 1,
        }
    }

    fn is_last(&self) -> bool {
        self.position + 1 == self.batches
    }
}

/// The sequences `ranges` (in plan order) form: one per run of one action.
fn sequences(plan: &[PlannedOp], ranges: &[Range<usize>]) -> Vec<InSequence> {
    let mut out: Vec<InSequence> = Vec::with_capacity(ranges.len());
    let mut sequence = 0;
    let mut begin = 0;
    for (i, range) in ranges.iter().enumerate() {
        if i > 0 && plan[range.start].action != plan[ranges[i - 1].start].action {
            sequence += 1;
            begin = i;
        }
        out.push(InSequence {
            sequence,
            position: i - begin,
            batches: 0,
            rows: 0,
        });
    }
    // Each sequence's size, known once it ended.
    let mut i = 0;
    while i < out.len() {
        let end = (i..out.len())
            .find(|&j| out[j].sequence != out[i].sequence)
            .unwrap_or(out.len());
        let rows = ranges[i..end].iter().map(|r| r.len()).sum();
        for place in &mut out[i..end] {
            place.batches = end - i;
            place.rows = rows;
        }
        i = end;
    }
    out
}

impl Delivery<'_> {
    pub async fn run(&self, diff: &ShardDiff, plan: &[PlannedOp], resume: Checkpoint) -> Delivered {
        let mut outcomes = resume.outcomes(plan.len());
        let start = resume.done_through.min(plan.len());
        let destination_down: OnceLock<String> = OnceLock::new();
        // A plan large enough for the destination's bulk jobs goes by them.
        // Decided on the whole plan, not what is left of it: an attempt that
        // takes over must cut the same batches to find the jobs in flight.
        let bulk = self.destination.bulk().filter(|bulk| plan.len() >= bulk.threshold);
        let limits = bulk.map_or(self.batch, |bulk| BatchLimits {
            records: bulk.records,
            bytes: bulk.bytes,
        });
        let by_jobs = bulk.is_some();
        // Cut from the watermark, batches fall where the earlier attempt's
        // did, so those it recorded as answered are skipped whole.
        let ranges: Vec<Range<usize>> = batches(plan, start, limits, |op| diff.entry(op).record.len())
            .into_iter()
            .filter(|range| resume.answered.get(&range.start) != Some(&range.end))
            .collect();
        let mut progress = Checkpoint {
            done_through: start,
            failures: resume
                .failures
                .into_iter()
                .filter(|(i, _)| *i < plan.len() && outcomes[*i].is_some())
                .collect(),
            answered: resume.answered.into_iter().filter(|(i, _)| *i >= start).collect(),
        };
        let mut answered = outcomes.iter().filter(|o| o.is_some()).count() as u64;
        let _ = self.progress.send(answered);
        // A destination that sees an action's batches as one upload session
        // gets them in order: each batch waits (before it takes a request
        // slot) until enough of its sequence answered.
        let places: Vec<Option<InSequence>> = if !by_jobs && self.destination.sequenced() {
            sequences(plan, &ranges).into_iter().map(Some).collect()
        } else {
            vec![None; ranges.len()]
        };
        let sequence_count = places.iter().flatten().map(|p| p.sequence + 1).max().unwrap_or(0);
        let gates: Vec<watch::Sender<usize>> = (0..sequence_count).map(|_| watch::channel(0).0).collect();
        let mut results = futures::stream::iter(ranges.into_iter().zip(places).map(|(range, place)| {
            let down = &destination_down;
            let gate = place.map(|place| (&gates[place.sequence], place));
            async move {
                if let Some((gate, place)) = gate {
                    let _ = gate.subscribe().wait_for(|n| *n >= place.waits_for()).await;
                }
                let (rows, slot) = self.send_batch(diff, plan, range.clone(), by_jobs, down, place).await;
                if let Some((gate, _)) = gate {
                    gate.send_modify(|n| *n += 1);
                }
                (range, rows, slot)
            }
        }))
        .buffer_unordered(MAX_BATCHES_IN_FLIGHT);
        // Answers not yet in a written checkpoint, and the request slots they hold.
        let mut unrecorded = false;
        let mut held: Vec<RequestPermit> = Vec::new();
        let mut writing: Option<CheckpointWrite> = None;
        let mut sending = true;
        loop {
            if unrecorded && writing.is_none() {
                let checkpoints = self.checkpoints.clone();
                let snapshot = progress.clone();
                writing = Some(CheckpointWrite {
                    write: tokio::spawn(async move { checkpoints.write(&snapshot).await }),
                    releases: std::mem::take(&mut held),
                });
                unrecorded = false;
            }
            tokio::select! {
                answer = results.next(), if sending => match answer {
                    Some((range, rows, slot)) => {
                        answered += range.len() as u64;
                        let _ = self.progress.send(answered);
                        progress.record(range.clone(), &rows);
                        for (i, row) in range.zip(rows) {
                            outcomes[i] = Some(row);
                        }
                        held.extend(slot);
                        unrecorded = true;
                    }
                    None => sending = false,
                },
                // Written (or given up on, which costs resends, never rows):
                // the slots of the answers it holds are free.
                () = written(&mut writing), if writing.is_some() => writing = None,
                else => break,
            }
        }
        Delivered {
            outcomes: outcomes
                .into_iter()
                .map(|o| o.unwrap_or_else(|| Err("not sent".to_string())))
                .collect(),
            destination_error: destination_down.get().cloned(),
        }
    }

    /// Sends one batch and answers for each of its ops. A batch refused for
    /// its content with no per-record detail is sent again in halves, and so
    /// on, until the records at fault are isolated and the others accepted.
    async fn send_batch(
        &self,
        diff: &ShardDiff,
        plan: &[PlannedOp],
        batch: Range<usize>,
        by_jobs: bool,
        down: &OnceLock<String>,
        place: Option<InSequence>,
    ) -> (Vec<Result<(), String>>, Option<RequestPermit>) {
        let ops = &plan[batch.clone()];
        let records: Vec<Record<'_>> = ops
            .iter()
            .map(|op| {
                let entry = diff.entry(op);
                Record {
                    key: &entry.key,
                    json: &entry.record,
                    previous: diff.previous(op).map(|previous| previous.record.as_str()),
                }
            })
            .collect();
        let action = ops[0].action;
        let mut answers: Vec<Option<Result<(), String>>> = vec![None; ops.len()];
        // Parts still to send, the next one last.
        let mut parts: Vec<Range<usize>> = Vec::new();
        parts.push(0..ops.len());
        // The slot of the last answered part, held until the batch's answer
        // is checkpointed (a bisected batch's earlier parts free theirs: the
        // next part needs one).
        let mut slot = None;
        while let Some(part) = parts.pop() {
            // The next part may need the very slot an earlier part holds.
            slot = None;
            let jobs = by_jobs.then(|| {
                let absolute = batch.start + part.start..batch.start + part.end;
                JobLog::new(self.checkpoints.storage.clone(), &self.checkpoints.prefix, &absolute)
            });
            // Only the batch's final part ends its sequence.
            let in_sequence = place.map(|place| SequencePlace {
                sequence: place.sequence,
                last: place.is_last() && parts.is_empty(),
                rows: place.rows,
            });
            match self
                .send_part(action, &records[part.clone()], jobs.as_ref(), down, in_sequence)
                .await
            {
                Ok((rows, permit)) => {
                    for (answer, row) in answers[part].iter_mut().zip(rows) {
                        *answer = Some(row);
                    }
                    slot = permit;
                }
                Err(PartRefused::Content(message)) if part.len() > 1 => {
                    let middle = part.start + part.len() / 2;
                    tracing::debug!(rows = part.len(), %message, "batch refused; sending it in halves");
                    parts.push(middle..part.end);
                    parts.push(part.start..middle);
                }
                Err(PartRefused::Content(message) | PartRefused::Whole(message)) => {
                    for answer in &mut answers[part] {
                        *answer = Some(Err(message.clone()));
                    }
                }
            }
        }
        let answers = answers
            .into_iter()
            .map(|answer| answer.expect("every part is answered"))
            .collect();
        (answers, slot)
    }

    /// Sends records until the destination answers, within the retry policy:
    /// `429`s wait (and pause the fleet), transient faults back off.
    async fn send_part(
        &self,
        action: Action,
        records: &[Record<'_>],
        jobs: Option<&JobLog>,
        down: &OnceLock<String>,
        place: Option<SequencePlace>,
    ) -> Result<(RowResults, Option<RequestPermit>), PartRefused> {
        let mut backoff = self.retry.initial_backoff;
        let mut attempts = 0;
        let mut rate_limited = 0;
        loop {
            if let Some(error) = down.get() {
                return Err(PartRefused::Whole(error.clone()));
            }
            let permit = self.limiter.acquire().await;
            if self.run_ended.load(Ordering::Relaxed) {
                return Err(PartRefused::Whole(RUN_ENDED.to_string()));
            }
            let sent_at = std::time::Instant::now();
            let call = async {
                match (jobs, place) {
                    (Some(jobs), _) => self.destination.send_bulk(action, records, jobs).await,
                    (None, Some(place)) => self.destination.send_in_sequence(action, records, place).await,
                    (None, None) => self.destination.send(action, records).await,
                }
            };
            let result = match &self.requests {
                Some(log) => {
                    let at_ms = chrono::Utc::now().timestamp_millis();
                    let (result, exchanges) = crate::debugger::capture(call).await;
                    log.push(crate::debugger::BatchLog {
                        at_ms,
                        action: action.as_str().to_string(),
                        rows: records
                            .iter()
                            .enumerate()
                            .map(|(i, record)| {
                                let error = match &result {
                                    Ok(rows) => rows.get(i).and_then(|row| row.as_ref().err().cloned()),
                                    Err(_) => None,
                                };
                                (record.key.to_string(), error)
                            })
                            .collect(),
                        outcome: match &result {
                            Ok(_) => "answered".to_string(),
                            Err(error) => error.to_string(),
                        },
                        exchanges,
                    });
                    result
                }
                None => call.await,
            };
            let took = sent_at.elapsed();
            let answer = match &result {
                Ok(_) => Answer::Answered,
                Err(DeliveryError::Rejected(_)) => Answer::Refused,
                Err(DeliveryError::RateLimited { .. }) => Answer::RateLimited,
                Err(DeliveryError::Transient(_)) => Answer::Transient,
                Err(DeliveryError::Permanent(_)) => Answer::Permanent,
            };
            match answer {
                Answer::RateLimited | Answer::Transient => permit.observe(Signal::BackPressure),
                // A bulk job's time is the job's, not a sign of queueing.
                _ if jobs.is_some() => {}
                Answer::Answered | Answer::Refused | Answer::Permanent => permit.observe(Signal::Answered(took)),
            }
            // An answer keeps its slot until it is checkpointed; a bulk job is
            // recorded in its job log, and a retry must not sit on a slot while
            // it waits.
            let slot = (answer == Answer::Answered && jobs.is_none()).then_some(permit);
            self.metrics.request(self.destination_name, answer, took);
            self.metrics
                .concurrency_limit(self.destination_name, self.limiter.concurrency_limit());
            match result {
                Ok(rows) if rows.len() == records.len() => return Ok((rows, slot)),
                Ok(rows) => {
                    return Err(PartRefused::Whole(format!(
                        "destination {:?} answered {} results for a batch of {}",
                        self.destination_name,
                        rows.len(),
                        records.len()
                    )))
                }
                Err(DeliveryError::Permanent(message)) => return Err(PartRefused::Whole(message)),
                Err(DeliveryError::Rejected(message)) => return Err(PartRefused::Content(message)),
                Err(DeliveryError::RateLimited { retry_after }) => {
                    rate_limited += 1;
                    if rate_limited > self.retry.max_rate_limited {
                        return Err(PartRefused::Whole("still rate limited after repeated retries".into()));
                    }
                    if let Some(asked) = retry_after.filter(|asked| *asked > self.retry.max_retry_after) {
                        return Err(PartRefused::Whole(format!(
                            "destination {:?} asked to wait {} (Retry-After), longer than its max_retry_after of {}; \
                             these rows are sent again on the next run",
                            self.destination_name,
                            humantime::format_duration(asked),
                            humantime::format_duration(self.retry.max_retry_after)
                        )));
                    }
                    let wait = retry_after.unwrap_or(backoff);
                    self.metrics.paused(self.destination_name, wait);
                    self.metrics.retry(self.destination_name, "rate_limited");
                    self.limiter.rate_limited(wait).await;
                    backoff = (backoff * 2).min(self.retry.max_backoff);
                }
                Err(DeliveryError::Transient(message)) => {
                    attempts += 1;
                    if attempts >= self.retry.max_attempts {
                        let error = format!(
                            "destination {:?} unavailable after {attempts} attempts: {message}",
                            self.destination_name
                        );
                        let _ = down.set(error.clone());
                        return Err(PartRefused::Whole(error));
                    }
                    self.metrics.retry(self.destination_name, "transient");
                    let jitter = rand::rng().random_range(0.5..1.0);
                    tokio::time::sleep(backoff.mul_f64(jitter)).await;
                    backoff = (backoff * 2).min(self.retry.max_backoff);
                }
            }
        }
    }
}

/// A checkpoint being written, and the request slots of the answers it
/// records: they are freed when it is done.
struct CheckpointWrite {
    write: tokio::task::JoinHandle<()>,
    releases: Vec<RequestPermit>,
}

/// Resolves once the checkpoint under way is written; never without one.
async fn written(writing: &mut Option<CheckpointWrite>) {
    match writing {
        Some(write) => {
            let _ = (&mut write.write).await;
            write.releases.clear();
        }
        None => std::future::pending().await,
    }
}

/// Why a part of a batch got no per-record answers.
enum PartRefused {
    /// Its content was refused: smaller parts may pass.
    Content(String),
    /// Every record of it fails with this reason.
    Whole(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebb_shared::protocol::Operation;

    fn op(action: Action) -> PlannedOp {
        PlannedOp {
            row: 0,
            operation: Operation::Added,
            action,
        }
    }

    #[test]
    fn batches_split_on_size_and_action() {
        let plan = vec![
            op(Action::Upsert),
            op(Action::Upsert),
            op(Action::Upsert),
            op(Action::Delete),
            op(Action::Delete),
        ];
        let size = |_: &PlannedOp| 10;
        assert_eq!(batches(&plan, 0, BatchLimits::records(2), size), vec![0..2, 2..3, 3..5]);
        assert_eq!(batches(&plan, 2, BatchLimits::records(10), size), vec![2..3, 3..5]);
        assert_eq!(
            batches(&plan, 5, BatchLimits::records(10), size),
            Vec::<Range<usize>>::new()
        );
        let bytes = BatchLimits { records: 10, bytes: 25 };
        assert_eq!(batches(&plan, 0, bytes, size), vec![0..2, 2..3, 3..5]);
        let tiny = BatchLimits { records: 10, bytes: 5 };
        assert_eq!(batches(&plan, 0, tiny, size), vec![0..1, 1..2, 2..3, 3..4, 4..5]);
    }

    #[test]
    fn each_run_of_one_action_is_a_sequence_whose_ends_go_alone() {
        let plan: Vec<PlannedOp> = [Action::Add; 5]
            .into_iter()
            .chain([Action::Remove; 3])
            .map(op)
            .collect();
        let ranges = vec![0..2, 2..4, 4..5, 5..8];
        let places = sequences(&plan, &ranges);
        let summary: Vec<(usize, usize, usize, usize)> = places
            .iter()
            .map(|p| (p.sequence, p.position, p.batches, p.rows))
            .collect();
        assert_eq!(summary, vec![(0, 0, 3, 5), (0, 1, 3, 5), (0, 2, 3, 5), (1, 0, 1, 3)]);
        // The first waits for nothing, the middle for the first, the last for
        // both; a sequence of one is first and last at once.
        let waits: Vec<usize> = places.iter().map(InSequence::waits_for).collect();
        assert_eq!(waits, vec![0, 1, 2, 0]);
        let last: Vec<bool> = places.iter().map(InSequence::is_last).collect();
        assert_eq!(last, vec![false, false, true, true]);
        assert!(sequences(&plan, &[]).is_empty());
    }

    /// An attempt resuming at a checkpoint (always a batch's end) cuts the
    /// rest of the plan exactly as the attempt before it did, so bulk jobs
    /// recorded under a batch's name are found again.
    #[test]
    fn a_resumed_attempt_cuts_the_same_batches() {
        let actions = [Action::Upsert, Action::Delete, Action::Upsert];
        let plan: Vec<PlannedOp> = (0..500).map(|i| op(actions[(i / 70) % 3])).collect();
        let size = |_: &PlannedOp| 10;
        let limits = BatchLimits {
            records: 32,
            bytes: 250,
        };
        let all = batches(&plan, 0, limits, size);
        for (i, batch) in all.iter().enumerate() {
            assert_eq!(batches(&plan, batch.end, limits, size), all[i + 1..].to_vec());
        }
    }

    fn answers(n: usize, failed: &[usize]) -> Vec<Result<(), String>> {
        (0..n)
            .map(|i| {
                if failed.contains(&i) {
                    Err(format!("bad {i}"))
                } else {
                    Ok(())
                }
            })
            .collect()
    }

    /// Batches answer out of order: each is recorded at once, and the
    /// watermark moves only over a contiguous prefix.
    #[test]
    fn a_checkpoint_records_batches_answered_out_of_order() {
        let mut progress = Checkpoint::default();
        progress.record(20..30, &answers(10, &[3]));
        progress.record(10..20, &answers(10, &[]));
        assert_eq!(progress.done_through, 0, "the first batch is still in flight");
        assert_eq!(progress.answered_ops(), 20);
        assert!(!progress.is_answered(9) && progress.is_answered(10) && progress.is_answered(29));
        assert!(!progress.is_answered(30));
        progress.record(0..10, &answers(10, &[0]));
        assert_eq!((progress.done_through, progress.answered.len()), (30, 0));
        progress.record(40..50, &answers(10, &[]));
        let outcomes = progress.outcomes(60);
        assert_eq!(outcomes[0], Some(Err("bad 0".into())));
        assert_eq!(outcomes[23], Some(Err("bad 3".into())));
        assert_eq!(outcomes[5], Some(Ok(())));
        assert_eq!(outcomes[35], None, "a batch in flight at the crash is sent again");
        assert_eq!(outcomes[45], Some(Ok(())), "an answered one beyond it is not");
        // It survives the trip through the object store.
        let decoded = rmp_decode(&ebb_shared::protocol::encode(&progress)).unwrap();
        assert_eq!(decoded, progress);
    }

    /// The furthest checkpoint wins, whatever the attempt, and the bulk job
    /// log under the same prefix is never taken for one.
    #[tokio::test]
    async fn the_latest_checkpoint_is_the_one_with_the_most_answers() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::from_url(dir.path().to_str().unwrap()).unwrap();
        let checkpoints = |attempt: &str| Checkpoints {
            storage: storage.clone(),
            prefix: "syncs/s/runs/r/checkpoints/0-ff/".into(),
            attempt: attempt.into(),
        };
        assert_eq!(checkpoints("a").latest().await.unwrap(), Checkpoint::default());
        let mut progress = Checkpoint::default();
        progress.record(0..100, &answers(100, &[]));
        checkpoints("b").write(&progress).await;
        progress.record(200..300, &answers(100, &[7]));
        checkpoints("a").write(&progress).await;
        storage
            .create(
                "syncs/s/runs/r/checkpoints/0-ff/jobs/000000000100-100/job",
                b"750X".to_vec(),
            )
            .await
            .unwrap();
        assert_eq!(checkpoints("c").latest().await.unwrap(), progress);
    }
}
