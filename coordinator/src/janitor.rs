//! The janitor: deletes the objects nothing references any more, a run's
//! working files once it has ended, and runs past their retention.
//!
//! Objects are collected by reference, never by age alone. Snapshot pointers
//! may name objects of runs long past, so a snapshot object goes only once no
//! pointer names it, and only a grace period after the janitor first saw it
//! so: a shard task planned before it lost its last pointer may still read it,
//! and no run lives longer than its deadline, which the grace period exceeds.
//! No commit can name it again either: only its own run's shards could, and
//! a run's late results stop moving pointers within its deadline after it
//! ended (`store::late_commit_window`), well within the grace period.
//!
//! The decision is [`plan_sweep`], a pure function of what the object store
//! lists and what the state DB references; [`Janitor::sweep`] does the I/O.

use crate::store::{now_ms, StateStore, StoreError, SyncReferences};
use ebb_shared::snapshot::paths::{self, ObjectKind};
use ebb_shared::storage::{Storage, StorageError};
use std::time::Duration;

/// How the janitor collects. Every duration is a floor: nothing goes sooner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcSettings {
    /// How long ended runs, their row results and their row files are kept.
    pub retention: Duration,
    /// How long an unreferenced snapshot object stays before it is deleted.
    /// Longer than the run deadline, so no shard still reading it is alive.
    pub grace: Duration,
    /// How long after a run ended its chunks, checkpoints and the row files of
    /// attempts that lost are deleted (late deliveries of the run may still
    /// be reading them a little while).
    pub run_files_after: Duration,
    /// How often the janitor sweeps.
    pub every: Duration,
    /// How long the live debugger's request logs (requests, answers and the
    /// rows they carried) are kept after their run ended; never longer than
    /// the run itself.
    pub requests_retention: Duration,
}

impl GcSettings {
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(25 * 3600);
    pub const DEFAULT_RUN_FILES_AFTER: Duration = Duration::from_secs(600);
    pub const DEFAULT_EVERY: Duration = Duration::from_secs(600);
    /// A week: long enough to debug last week's failures, short for row
    /// payloads to linger in the object store.
    pub const DEFAULT_REQUESTS_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

    /// Checks the settings against the run deadline; the error names the
    /// setting to change.
    pub fn validated(self, run_deadline: Duration) -> Result<GcSettings, String> {
        if self.grace <= run_deadline {
            return Err(format!(
                "the GC grace period (--gc-grace / EBB_GC_GRACE, {}) must be longer than the run deadline \
                 (EBB_RUN_DEADLINE, {}): a shard of a run still in flight may read an object it would collect",
                humantime::format_duration(self.grace),
                humantime::format_duration(run_deadline)
            ));
        }
        if self.retention < self.run_files_after {
            return Err(format!(
                "the retention (--retention / EBB_RETENTION, {}) must be at least {}",
                humantime::format_duration(self.retention),
                humantime::format_duration(self.run_files_after)
            ));
        }
        if self.every.is_zero() {
            return Err("the GC interval (--gc-every / EBB_GC_EVERY) must be more than zero".into());
        }
        Ok(self)
    }
}

impl Default for GcSettings {
    fn default() -> Self {
        GcSettings {
            retention: Self::DEFAULT_RETENTION,
            grace: Self::DEFAULT_GRACE,
            run_files_after: Self::DEFAULT_RUN_FILES_AFTER,
            every: Self::DEFAULT_EVERY,
            requests_retention: Self::DEFAULT_REQUESTS_RETENTION,
        }
    }
}

/// What one sweep of one sync does.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepPlan {
    /// Objects to delete now.
    pub delete: Vec<String>,
    /// Unreferenced objects seen for the first time: collected a grace later.
    pub mark: Vec<String>,
    /// Candidates to forget: referenced again, deleted now, or gone.
    pub unmark: Vec<String>,
    /// Expired runs whose records go once their objects are gone.
    pub expire_runs: Vec<String>,
}

/// Decides a sweep of one sync from the keys the object store lists under it
/// and what the state DB references. Pure: the property tests drive it.
pub fn plan_sweep(keys: &[String], references: &SyncReferences, now: i64, settings: &GcSettings) -> SweepPlan {
    let mut plan = SweepPlan::default();
    let ms = |d: Duration| d.as_millis() as i64;
    for key in keys {
        let Some(object) = paths::parse(key) else {
            continue; // not of our layout: never ours to delete
        };
        let candidate_since = references.candidates.get(key.as_str()).copied();
        if references.referenced.contains(key.as_str()) {
            if candidate_since.is_some() {
                plan.unmark.push(key.clone());
            }
            continue;
        }
        let run = references.runs.get(object.run_id);
        let delete = match (run, object.kind) {
            // A run in flight owns its objects; its commits decide.
            (Some(None), _) => false,
            // An expired run's working files and row files go with it.
            (Some(Some(_)), ObjectKind::Chunks | ObjectKind::Checkpoint | ObjectKind::Rows)
                if references.expired.contains(object.run_id) =>
            {
                true
            }
            (Some(Some(ended)), ObjectKind::Chunks | ObjectKind::Checkpoint | ObjectKind::Rows) => {
                now - ended >= ms(settings.run_files_after)
            }
            // The live debugger's request logs stay for their own retention,
            // and never outlive their run.
            (Some(Some(ended)), ObjectKind::Requests) => {
                references.expired.contains(object.run_id) || now - ended >= ms(settings.requests_retention)
            }
            // Unreferenced snapshot objects of an ended run, and anything of a
            // run the DB no longer holds: only after a grace since first seen.
            (Some(Some(_)), ObjectKind::Snapshot) | (None, _) => match candidate_since {
                Some(since) => now - since >= ms(settings.grace),
                None => {
                    plan.mark.push(key.clone());
                    false
                }
            },
        };
        if delete {
            plan.delete.push(key.clone());
            if candidate_since.is_some() {
                plan.unmark.push(key.clone());
            }
        }
    }
    // Candidates no longer listed were deleted by someone else (or a sweep
    // that stopped half way): forget them.
    let listed: std::collections::HashSet<&str> = keys.iter().map(String::as_str).collect();
    let mut gone: Vec<String> = references
        .candidates
        .keys()
        .filter(|key| !listed.contains(key.as_str()))
        .cloned()
        .collect();
    gone.sort();
    plan.unmark.extend(gone);
    let mut expired: Vec<String> = references.expired.iter().cloned().collect();
    expired.sort();
    plan.expire_runs = expired;
    plan
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What a sweep did, for logs and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub objects_deleted: u64,
    pub objects_marked: u64,
    pub runs_expired: u64,
}

pub struct Janitor {
    store: StateStore,
    storage: Storage,
    settings: GcSettings,
}

impl Janitor {
    pub fn new(store: StateStore, storage: Storage, settings: GcSettings) -> Janitor {
        Janitor {
            store,
            storage,
            settings,
        }
    }

    pub fn settings(&self) -> &GcSettings {
        &self.settings
    }

    /// One pass over every sync the state DB knows. Reads the references
    /// *after* listing, so an object written between the two is either seen
    /// referenced or belongs to a run in flight; either way it stays.
    pub async fn sweep(&self) -> Result<SweepReport, SweepError> {
        let mut report = SweepReport::default();
        for sync in self.store.sync_names().await? {
            let sync_report = self.sweep_sync(&sync).await?;
            report.objects_deleted += sync_report.objects_deleted;
            report.objects_marked += sync_report.objects_marked;
            report.runs_expired += sync_report.runs_expired;
        }
        Ok(report)
    }

    async fn sweep_sync(&self, sync: &str) -> Result<SweepReport, SweepError> {
        let keys = self.storage.list(&format!("syncs/{sync}/")).await?;
        let now = now_ms();
        let expire_before = now - self.settings.retention.as_millis() as i64;
        let references = self.store.sync_references(sync, expire_before).await?;
        // Keys of other syncs whose name starts with this one's and a slash.
        let keys: Vec<String> = keys
            .into_iter()
            .filter(|key| paths::parse(key).is_some_and(|object| object.sync == sync))
            .collect();
        let plan = plan_sweep(&keys, &references, now, &self.settings);
        self.store.mark_gc_candidates(sync, &plan.mark, now).await?;
        for key in &plan.delete {
            self.storage.delete(key).await?;
        }
        self.store.unmark_gc_candidates(&plan.unmark).await?;
        // Every object of an expired run the plan could delete is gone now;
        // its records follow (a crash in between leaves objects of an unknown
        // run, which a later sweep collects after the grace).
        let mut runs_expired = 0;
        for run_id in &plan.expire_runs {
            if self.store.delete_run(run_id).await? {
                runs_expired += 1;
            }
        }
        if !plan.delete.is_empty() || runs_expired > 0 {
            tracing::info!(
                sync,
                objects_deleted = plan.delete.len(),
                runs_expired,
                "janitor collected"
            );
        }
        Ok(SweepReport {
            objects_deleted: plan.delete.len() as u64,
            objects_marked: plan.mark.len() as u64,
            runs_expired,
        })
    }
}

#[cfg(test)]
mod tests {
    //! A model of runs, commits, crashes and sweeps, driven at random: the
    //! janitor never deletes an object a pointer, a kept run's row results, a
    //! shard in flight or a late commit may still need, and once everything
    //! has ended, it leaves nothing else behind.
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    const SLOTS: usize = 3;
    const HOUR: i64 = 3_600_000;
    const RUN_DEADLINE: i64 = 24 * HOUR;

    #[derive(Debug, Clone)]
    enum Op {
        Start,
        /// The active run's shard for a slot reads its base and writes an attempt.
        Write(usize),
        /// The active run commits the latest attempt of a slot.
        Commit(usize),
        End,
        /// The last ended run's attempt for a slot commits late.
        LateCommit(usize),
        Advance(i64),
        Sweep,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => Just(Op::Start),
            4 => (0..SLOTS).prop_map(Op::Write),
            3 => (0..SLOTS).prop_map(Op::Commit),
            2 => Just(Op::End),
            2 => (0..SLOTS).prop_map(Op::LateCommit),
            3 => (1..6 * 60).prop_map(|minutes| Op::Advance(minutes as i64 * 60_000)),
            3 => Just(Op::Sweep),
        ]
    }

    #[derive(Debug, Default)]
    struct Run {
        created: i64,
        finished: Option<i64>,
        /// The objects its shards were planned to read.
        reads: Vec<String>,
        /// Its latest attempt per slot: (snapshot, row file).
        attempts: BTreeMap<usize, (String, String)>,
        committed_rows: Vec<String>,
    }

    struct World {
        now: i64,
        settings: GcSettings,
        runs: BTreeMap<String, Run>,
        pointers: Vec<String>,
        objects: BTreeSet<String>,
        candidates: HashMap<String, i64>,
        next: u32,
    }

    impl World {
        fn new() -> World {
            let settings = GcSettings {
                retention: Duration::from_secs(48 * 3600),
                ..GcSettings::default()
            }
            .validated(Duration::from_millis(RUN_DEADLINE as u64))
            .unwrap();
            let mut world = World {
                now: 0,
                settings,
                runs: BTreeMap::new(),
                pointers: Vec::new(),
                objects: BTreeSet::new(),
                candidates: HashMap::new(),
                next: 1,
            };
            let mut first = Run::default();
            for slot in 0..SLOTS {
                let key = format!("syncs/s/snapshots/r0/{slot}-a.ebb");
                world.objects.insert(key.clone());
                world.pointers.push(key);
            }
            first.finished = Some(0);
            world.runs.insert("r0".into(), first);
            world
        }

        fn active(&self) -> Option<String> {
            self.runs
                .iter()
                .find(|(_, run)| run.finished.is_none())
                .map(|(id, _)| id.clone())
        }

        fn apply(&mut self, op: &Op) {
            // The reconciler interrupts runs past their deadline.
            if let Some(id) = self.active() {
                if self.now - self.runs[&id].created > RUN_DEADLINE {
                    self.runs.get_mut(&id).unwrap().finished = Some(self.now);
                }
            }
            match *op {
                Op::Start if self.active().is_none() => {
                    let id = format!("r{}", self.next);
                    self.next += 1;
                    let chunk = paths::chunks("s", &id, "t", 0);
                    self.objects.insert(chunk);
                    let run = Run {
                        created: self.now,
                        reads: self.pointers.clone(),
                        ..Run::default()
                    };
                    self.runs.insert(id, run);
                }
                Op::Write(slot) => {
                    let Some(id) = self.active() else { return };
                    let run = &self.runs[&id];
                    for read in &run.reads {
                        assert!(self.objects.contains(read), "a shard in flight lost {read}");
                    }
                    let attempt = self.next;
                    self.next += 1;
                    let snapshot = format!("syncs/s/snapshots/{id}/{slot}-{attempt}.ebb");
                    let rows = format!("syncs/s/runs/{id}/rows/{slot}-{attempt}.jsonl");
                    let checkpoint = format!("syncs/s/runs/{id}/checkpoints/{slot}/{attempt}.ebb");
                    for key in [&snapshot, &rows, &checkpoint] {
                        self.objects.insert(key.clone());
                    }
                    self.runs.get_mut(&id).unwrap().attempts.insert(slot, (snapshot, rows));
                }
                Op::Commit(slot) => {
                    let Some(id) = self.active() else { return };
                    self.commit(&id, slot);
                }
                Op::End => {
                    if let Some(id) = self.active() {
                        self.runs.get_mut(&id).unwrap().finished = Some(self.now);
                    }
                }
                Op::LateCommit(slot) => {
                    let last_ended = self
                        .runs
                        .iter()
                        .filter_map(|(id, run)| run.finished.map(|at| (at, id.clone())))
                        .max();
                    if let Some((finished, id)) = last_ended {
                        // The store's fence: late results past the window move nothing.
                        if self.now - finished <= HOUR.min(RUN_DEADLINE) {
                            self.commit(&id, slot);
                        }
                    }
                }
                Op::Advance(ms) => self.now += ms,
                Op::Sweep => self.sweep(),
                Op::Start => {}
            }
        }

        fn commit(&mut self, id: &str, slot: usize) {
            let Some((snapshot, rows)) = self.runs.get_mut(id).unwrap().attempts.remove(&slot) else {
                return;
            };
            assert!(
                self.objects.contains(&snapshot),
                "a commit names {snapshot}, already collected"
            );
            self.pointers[slot] = snapshot;
            let run = self.runs.get_mut(id).unwrap();
            // Only a run in flight counts its row file (a late one is superseded).
            if run.finished.is_none() {
                run.committed_rows.push(rows);
            }
        }

        fn references(&self) -> SyncReferences {
            let expire_before = self.now - self.settings.retention.as_millis() as i64;
            let latest = self
                .runs
                .iter()
                .filter_map(|(id, run)| run.finished.map(|at| (at, id)))
                .max();
            let mut references = SyncReferences {
                candidates: self.candidates.clone(),
                ..SyncReferences::default()
            };
            for (id, run) in &self.runs {
                references.runs.insert(id.clone(), run.finished);
                let expired = run.finished.is_some_and(|at| at < expire_before) && Some(id) != latest.map(|l| l.1);
                if expired {
                    references.expired.insert(id.clone());
                } else {
                    references.referenced.extend(run.committed_rows.iter().cloned());
                }
            }
            references.referenced.extend(self.pointers.iter().cloned());
            references
        }

        fn sweep(&mut self) {
            let keys: Vec<String> = self.objects.iter().cloned().collect();
            let references = self.references();
            let plan = plan_sweep(&keys, &references, self.now, &self.settings);
            for key in &plan.delete {
                assert!(!references.referenced.contains(key), "deleted referenced {key}");
                self.objects.remove(key);
            }
            for key in &plan.mark {
                self.candidates.entry(key.clone()).or_insert(self.now);
            }
            for key in &plan.unmark {
                self.candidates.remove(key);
            }
            for id in &plan.expire_runs {
                self.runs.remove(id);
            }
            for pointer in &self.pointers {
                assert!(self.objects.contains(pointer), "a pointer names {pointer}, collected");
            }
            for (id, run) in &self.runs {
                for rows in &run.committed_rows {
                    assert!(self.objects.contains(rows), "kept run {id} lost its row file {rows}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn the_janitor_never_deletes_what_is_referenced_and_leaves_no_garbage(ops in proptest::collection::vec(op(), 1..120)) {
            let mut world = World::new();
            for op in &ops {
                world.apply(op);
            }
            // Everything ends; long after, two sweeps (mark, then delete) leave
            // exactly what the pointers and the kept run's row results name.
            world.apply(&Op::End);
            world.now += (world.settings.retention + world.settings.grace).as_millis() as i64 + HOUR;
            world.apply(&Op::Sweep);
            world.now += world.settings.grace.as_millis() as i64 + HOUR;
            world.apply(&Op::Sweep);
            let needed: BTreeSet<String> = world.references().referenced.into_iter().collect();
            prop_assert_eq!(&world.objects, &needed);
            prop_assert!(world.runs.len() <= 1, "runs past retention were kept: {:?}", world.runs.keys());
        }
    }

    #[test]
    fn a_referenced_object_of_a_long_expired_run_stays() {
        let settings = GcSettings::default();
        let key = paths::snapshot("s", "old", &ebb_shared::hashing::HashRange::FULL, "t");
        let mut references = SyncReferences::default();
        references.runs.insert("old".into(), Some(0));
        references.expired.insert("old".into());
        references.referenced.insert(key.clone());
        let now = 400 * 24 * HOUR;
        let plan = plan_sweep(std::slice::from_ref(&key), &references, now, &settings);
        assert!(plan.delete.is_empty() && plan.mark.is_empty(), "{plan:?}");
        assert_eq!(plan.expire_runs, vec!["old".to_string()]);
    }

    #[test]
    fn request_logs_stay_for_the_debugger_retention_and_never_outlive_their_run() {
        let settings = GcSettings::default();
        let key = paths::requests("s", "r", &ebb_shared::hashing::HashRange::FULL, "t");
        let mut references = SyncReferences::default();
        references.runs.insert("r".into(), Some(0));
        // Long after the run's working files went, its request log stays.
        let later = settings.run_files_after.as_millis() as i64 * 10;
        let plan = plan_sweep(std::slice::from_ref(&key), &references, later, &settings);
        assert!(plan.delete.is_empty() && plan.mark.is_empty(), "{plan:?}");
        // It goes once the debugger's retention has passed, the run kept.
        let retention = settings.requests_retention.as_millis() as i64;
        let plan = plan_sweep(std::slice::from_ref(&key), &references, retention - 1, &settings);
        assert!(plan.delete.is_empty(), "{plan:?}");
        let plan = plan_sweep(std::slice::from_ref(&key), &references, retention, &settings);
        assert_eq!(plan.delete, vec![key.clone()]);
        assert!(plan.expire_runs.is_empty(), "the run itself stays: {plan:?}");
        // And with the run, whichever comes first.
        references.expired.insert("r".into());
        let plan = plan_sweep(std::slice::from_ref(&key), &references, later, &settings);
        assert_eq!(plan.delete, vec![key]);
    }

    #[test]
    fn settings_that_could_collect_a_live_object_are_refused_by_name() {
        let day = Duration::from_secs(24 * 3600);
        let short = GcSettings {
            grace: Duration::from_secs(3600),
            ..GcSettings::default()
        };
        let error = short.validated(day).unwrap_err();
        assert!(
            error.contains("--gc-grace") && error.contains("EBB_RUN_DEADLINE"),
            "{error}"
        );
        assert!(GcSettings::default().validated(day).is_ok());
    }
}
