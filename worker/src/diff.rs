//! The merge-diff of one hash range: pure decision logic, no I/O.
//!
//! The current rows and the previous snapshot are both ordered by
//! `(key_hash, key)`; one merge pass classifies every key as unchanged, added,
//! changed, removed or invalid. The sync's behaviour then decides which rows
//! are sent, and after delivery the outcomes decide the next snapshot: a row
//! the destination rejected keeps its previous entry, so the next run sees and
//! retries it (invariant 4).

use crate::behaviour::{Action, Behaviour, Change};
use ebb_shared::protocol::Operation;
use ebb_shared::snapshot::Entry;
use std::cmp::Ordering;

/// The rarer states box their second entry, so the common ones stay small:
/// a shard holds one `RowState` per row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowState {
    Unchanged(Entry),
    Added(Entry),
    Changed {
        previous: Box<Entry>,
        current: Entry,
    },
    Removed(Entry),
    /// The key appears more than once in the model: nothing is sent and the
    /// previous entry, if any, stays as it was.
    Duplicate {
        key: String,
        rows: u64,
        previous: Option<Box<Entry>>,
    },
}

/// One row to send: the index of its `RowState`, how CDC saw it, what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedOp {
    pub row: usize,
    pub operation: Operation,
    pub action: Action,
}

#[derive(Debug, Default)]
pub struct ShardDiff {
    pub rows: Vec<RowState>,
}

impl ShardDiff {
    /// Merges the current rows (any order) with the previous snapshot (sorted).
    pub fn compute(mut current: Vec<Entry>, previous: Vec<Entry>) -> ShardDiff {
        // Sorting small (hash, index) pairs instead of whole entries keeps the
        // sort in cache; keys are compared only when hashes collide.
        let mut order: Vec<(u64, u32)> = current
            .iter()
            .enumerate()
            .map(|(index, entry)| (entry.key_hash, index as u32))
            .collect();
        order.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| current[a.1 as usize].key.cmp(&current[b.1 as usize].key))
        });
        let mut rows = Vec::with_capacity(current.len().max(previous.len()));
        let mut ordered = order.into_iter().map(|(_, index)| index as usize).peekable();
        let mut previous = previous.into_iter().peekable();
        loop {
            let order = match (ordered.peek(), previous.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(&c), Some(p)) => current[c].sort_key().cmp(&p.sort_key()),
            };
            match order {
                Ordering::Greater => rows.push(RowState::Removed(previous.next().unwrap())),
                Ordering::Less | Ordering::Equal => {
                    let entry = std::mem::take(&mut current[ordered.next().unwrap()]);
                    let mut copies = 1u64;
                    while ordered
                        .peek()
                        .is_some_and(|&next| current[next].sort_key() == entry.sort_key())
                    {
                        ordered.next();
                        copies += 1;
                    }
                    let prior = if order == Ordering::Equal {
                        previous.next()
                    } else {
                        None
                    };
                    rows.push(match prior {
                        _ if copies > 1 => RowState::Duplicate {
                            key: entry.key,
                            rows: copies,
                            previous: prior.map(Box::new),
                        },
                        None => RowState::Added(entry),
                        Some(prior) if prior.fingerprint == entry.fingerprint => RowState::Unchanged(prior),
                        Some(prior) => RowState::Changed {
                            previous: Box::new(prior),
                            current: entry,
                        },
                    });
                }
            }
        }
        ShardDiff { rows }
    }

    /// The rows the sync sends, in key order with removals last: a
    /// deterministic order, so a resumed attempt can skip what a checkpoint
    /// says is done.
    pub fn plan(&self, behaviour: &Behaviour, full_resync: bool) -> Vec<PlannedOp> {
        let mut entering = Vec::new();
        let mut leaving = Vec::new();
        for (row, state) in self.rows.iter().enumerate() {
            let change = match state {
                RowState::Added(_) => Change::Added,
                RowState::Changed { .. } => Change::Changed,
                RowState::Unchanged(_) => Change::Unchanged,
                RowState::Removed(_) => Change::Removed,
                RowState::Duplicate { .. } => continue,
            };
            if let Some((operation, action)) = behaviour.action(change, full_resync) {
                let op = PlannedOp { row, operation, action };
                if action.is_removal() {
                    leaving.push(op);
                } else {
                    entering.push(op);
                }
            }
        }
        entering.extend(leaving);
        entering
    }

    /// The entry a row sends (its current record) or removes (its last record).
    pub fn entry(&self, op: &PlannedOp) -> &Entry {
        match &self.rows[op.row] {
            RowState::Added(entry) | RowState::Unchanged(entry) | RowState::Removed(entry) => entry,
            RowState::Changed { current, .. } => current,
            RowState::Duplicate { .. } => unreachable!("duplicates are never planned"),
        }
    }

    /// The entry last delivered for a changed row's key; `None` for other rows.
    pub fn previous(&self, op: &PlannedOp) -> Option<&Entry> {
        match &self.rows[op.row] {
            RowState::Changed { previous, .. } => Some(previous),
            _ => None,
        }
    }

    /// The next snapshot, in key order, given which planned ops succeeded.
    /// `succeeded[i]` answers for `plan[i]`.
    pub fn next_snapshot<'a>(
        &'a self,
        behaviour: &Behaviour,
        plan: &[PlannedOp],
        succeeded: &[bool],
    ) -> Vec<&'a Entry> {
        self.kept(behaviour, plan, succeeded)
            .filter_map(|(state, kept)| match (state, kept) {
                (_, Kept::Neither) => None,
                (RowState::Added(current) | RowState::Changed { current, .. }, Kept::Current) => Some(current),
                (RowState::Unchanged(previous) | RowState::Removed(previous), Kept::Previous) => Some(previous),
                (RowState::Changed { previous, .. }, Kept::Previous) => Some(&**previous),
                (RowState::Duplicate { previous, .. }, Kept::Previous) => previous.as_deref(),
                (state, kept) => unreachable!("{kept:?} for {state:?}"),
            })
            .collect()
    }

    /// Whether the next snapshot holds exactly the previous entries: then the
    /// previous snapshot object can stay current instead of being rewritten.
    pub fn keeps_previous_snapshot(&self, behaviour: &Behaviour, plan: &[PlannedOp], succeeded: &[bool]) -> bool {
        self.kept(behaviour, plan, succeeded).all(|(state, kept)| {
            let had_previous = match state {
                RowState::Added(_) => false,
                RowState::Duplicate { previous, .. } => previous.is_some(),
                RowState::Unchanged(_) | RowState::Changed { .. } | RowState::Removed(_) => true,
            };
            match kept {
                Kept::Previous => true,
                Kept::Current => false,
                Kept::Neither => !had_previous,
            }
        })
    }

    /// Which entry of each row the next snapshot keeps, given the outcomes.
    fn kept<'a>(
        &'a self,
        behaviour: &Behaviour,
        plan: &[PlannedOp],
        succeeded: &[bool],
    ) -> impl Iterator<Item = (&'a RowState, Kept)> {
        let mut outcome: Vec<Option<bool>> = vec![None; self.rows.len()];
        for (op, ok) in plan.iter().zip(succeeded) {
            outcome[op.row] = Some(*ok);
        }
        let remember_removed = behaviour.remembers_removed_rows();
        self.rows.iter().zip(outcome).map(move |(state, sent)| {
            let kept = match (state, sent) {
                (RowState::Unchanged(_), _) => Kept::Previous,
                (RowState::Added(_), Some(true)) => Kept::Current,
                (RowState::Added(_), _) => Kept::Neither,
                (RowState::Changed { .. }, Some(true)) => Kept::Current,
                (RowState::Changed { .. }, _) => Kept::Previous,
                (RowState::Removed(_), Some(true)) => Kept::Neither,
                (RowState::Removed(_), Some(false)) => Kept::Previous,
                (RowState::Removed(_), None) if remember_removed => Kept::Previous,
                (RowState::Removed(_), None) => Kept::Neither,
                (RowState::Duplicate { previous: Some(_), .. }, _) => Kept::Previous,
                (RowState::Duplicate { previous: None, .. }, _) => Kept::Neither,
            };
            (state, kept)
        })
    }
}

/// What the next snapshot keeps of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    Previous,
    Current,
    Neither,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebb_shared::config::{SyncMode, SyncType};
    use ebb_shared::hashing::key_hash;

    fn entry(key: &str, fingerprint: u128) -> Entry {
        Entry {
            key_hash: key_hash(key),
            key: key.to_string(),
            fingerprint,
            record: format!("{{\"v\":{fingerprint}}}"),
            mapping_error: None,
        }
    }

    fn behaviour(mode: SyncMode) -> Behaviour {
        Behaviour {
            sync_type: SyncType::Object,
            mode,
            delete_behavior: mode.delete_behaviors()[0],
        }
    }

    const UPSERT: SyncMode = SyncMode::Upsert;
    const MIRROR: SyncMode = SyncMode::Mirror;

    fn sorted(mut entries: Vec<Entry>) -> Vec<Entry> {
        entries.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        entries
    }

    fn keys(entries: Vec<&Entry>) -> Vec<(String, u128)> {
        let mut out: Vec<_> = entries.into_iter().map(|e| (e.key.clone(), e.fingerprint)).collect();
        out.sort();
        out
    }

    #[test]
    fn classifies_every_key() {
        let previous = sorted(vec![entry("same", 1), entry("edit", 1), entry("gone", 1)]);
        let current = vec![entry("new", 1), entry("edit", 2), entry("same", 1)];
        let diff = ShardDiff::compute(current, previous);
        let mut kinds: Vec<(String, &str)> = diff
            .rows
            .iter()
            .map(|r| match r {
                RowState::Unchanged(e) => (e.key.clone(), "unchanged"),
                RowState::Added(e) => (e.key.clone(), "added"),
                RowState::Changed { current, .. } => (current.key.clone(), "changed"),
                RowState::Removed(e) => (e.key.clone(), "removed"),
                RowState::Duplicate { key, .. } => (key.clone(), "duplicate"),
            })
            .collect();
        kinds.sort();
        assert_eq!(
            kinds,
            vec![
                ("edit".into(), "changed"),
                ("gone".into(), "removed"),
                ("new".into(), "added"),
                ("same".into(), "unchanged")
            ]
        );
        let upsert = diff.plan(&behaviour(UPSERT), false);
        assert_eq!(upsert.len(), 2);
        let mirror = diff.plan(&behaviour(MIRROR), false);
        assert_eq!(mirror.len(), 3);
        assert_eq!(mirror.last().unwrap().action, Action::Delete);
        assert_eq!(diff.plan(&behaviour(MIRROR), true).len(), 4);
    }

    #[test]
    fn the_previous_snapshot_stays_only_when_no_entry_moves() {
        let previous = sorted(vec![entry("same", 1), entry("edit", 1), entry("gone", 1)]);
        let quiet = ShardDiff::compute(
            vec![entry("same", 1), entry("edit", 1), entry("gone", 1)],
            previous.clone(),
        );
        assert!(quiet.keeps_previous_snapshot(&behaviour(MIRROR), &[], &[]));
        // A full resync sends everything and keeps the same entries.
        let resync = quiet.plan(&behaviour(MIRROR), true);
        assert!(quiet.keeps_previous_snapshot(&behaviour(MIRROR), &resync, &vec![true; resync.len()]));

        let busy = ShardDiff::compute(vec![entry("new", 1), entry("edit", 2), entry("same", 1)], previous);
        let plan = busy.plan(&behaviour(MIRROR), false);
        assert!(!busy.keeps_previous_snapshot(&behaviour(MIRROR), &plan, &vec![true; plan.len()]));
        // Everything failed: every row keeps its previous entry, the new row stays out.
        assert!(busy.keeps_previous_snapshot(&behaviour(MIRROR), &plan, &vec![false; plan.len()]));
        // Upsert does not delete "gone" but forgets it: the snapshot changes.
        let upsert = busy.plan(&behaviour(UPSERT), false);
        assert!(!busy.keeps_previous_snapshot(&behaviour(UPSERT), &upsert, &vec![false; upsert.len()]));
        // Whatever it answers, it agrees with the entries the next snapshot holds.
        for (mode, ok) in [(MIRROR, true), (MIRROR, false), (UPSERT, true), (UPSERT, false)] {
            let plan = busy.plan(&behaviour(mode), false);
            let outcomes = vec![ok; plan.len()];
            let next: Vec<Entry> = busy
                .next_snapshot(&behaviour(mode), &plan, &outcomes)
                .into_iter()
                .cloned()
                .collect();
            let unchanged = next == sorted(vec![entry("same", 1), entry("edit", 1), entry("gone", 1)]);
            assert_eq!(
                busy.keeps_previous_snapshot(&behaviour(mode), &plan, &outcomes),
                unchanged
            );
        }
    }

    #[test]
    fn failed_rows_keep_their_previous_entry() {
        let previous = sorted(vec![entry("edit", 1), entry("gone", 1)]);
        let current = vec![entry("new", 1), entry("edit", 2)];
        let diff = ShardDiff::compute(current, previous);
        let plan = diff.plan(&behaviour(MIRROR), false);
        let all_failed = vec![false; plan.len()];
        assert_eq!(
            keys(diff.next_snapshot(&behaviour(MIRROR), &plan, &all_failed)),
            vec![("edit".into(), 1), ("gone".into(), 1)],
            "nothing advanced: the next run retries all three"
        );
        let all_ok = vec![true; plan.len()];
        assert_eq!(
            keys(diff.next_snapshot(&behaviour(MIRROR), &plan, &all_ok)),
            vec![("edit".into(), 2), ("new".into(), 1)]
        );
    }

    #[test]
    fn duplicates_are_never_sent_and_keep_the_previous_entry() {
        let previous = sorted(vec![entry("dup", 1)]);
        let current = vec![
            entry("dup", 2),
            entry("dup", 3),
            entry("fresh-dup", 1),
            entry("fresh-dup", 1),
        ];
        let diff = ShardDiff::compute(current, previous);
        assert!(diff.plan(&behaviour(MIRROR), true).is_empty());
        assert_eq!(
            keys(diff.next_snapshot(&behaviour(MIRROR), &[], &[])),
            vec![("dup".into(), 1)]
        );
        let duplicates: u64 = diff
            .rows
            .iter()
            .map(|r| match r {
                RowState::Duplicate { rows, .. } => *rows,
                _ => 0,
            })
            .sum();
        assert_eq!(duplicates, 4);
    }

    #[test]
    fn upsert_forgets_removed_rows() {
        let diff = ShardDiff::compute(vec![], sorted(vec![entry("gone", 1)]));
        let plan = diff.plan(&behaviour(UPSERT), false);
        assert!(plan.is_empty());
        assert!(diff.next_snapshot(&behaviour(UPSERT), &plan, &[]).is_empty());
    }

    #[test]
    fn insert_mode_remembers_keys_that_left_so_they_are_never_sent_twice() {
        let insert = behaviour(SyncMode::Insert);
        let diff = ShardDiff::compute(vec![], sorted(vec![entry("sent-once", 1)]));
        let plan = diff.plan(&insert, false);
        assert!(plan.is_empty());
        let kept = diff.next_snapshot(&insert, &plan, &[]);
        assert_eq!(keys(kept), vec![("sent-once".into(), 1)]);
        // It comes back, changed: still nothing to send.
        let diff = ShardDiff::compute(vec![entry("sent-once", 2)], sorted(vec![entry("sent-once", 1)]));
        assert!(diff.plan(&insert, false).is_empty());
    }
}
