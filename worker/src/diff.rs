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

    /// The next snapshot, in key order, given which planned ops succeeded.
    /// `succeeded[i]` answers for `plan[i]`.
    pub fn next_snapshot<'a>(
        &'a self,
        behaviour: &Behaviour,
        plan: &[PlannedOp],
        succeeded: &[bool],
    ) -> Vec<&'a Entry> {
        let mut outcome: Vec<Option<bool>> = vec![None; self.rows.len()];
        for (op, ok) in plan.iter().zip(succeeded) {
            outcome[op.row] = Some(*ok);
        }
        let remember_removed = behaviour.remembers_removed_rows();
        self.rows
            .iter()
            .zip(outcome)
            .filter_map(|(state, sent)| match (state, sent) {
                (RowState::Unchanged(entry), _) => Some(entry),
                (RowState::Added(entry), Some(true)) => Some(entry),
                (RowState::Added(_), _) => None,
                (RowState::Changed { current, .. }, Some(true)) => Some(current),
                (RowState::Changed { previous, .. }, _) => Some(&**previous),
                (RowState::Removed(_), Some(true)) => None,
                (RowState::Removed(previous), Some(false)) => Some(previous),
                (RowState::Removed(previous), None) => remember_removed.then_some(previous),
                (RowState::Duplicate { previous, .. }, _) => previous.as_deref(),
            })
            .collect()
    }
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
