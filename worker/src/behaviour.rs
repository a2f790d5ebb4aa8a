//! What a sync does with each row CDC classifies: the rules of its type, mode
//! and delete behaviour, in one table. Pure: no I/O.

use ebb_shared::config::{DeleteBehavior, SyncMode, SyncSpec, SyncType};
use ebb_shared::protocol::Operation;

/// What a destination is asked to do with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Create the record; leave an existing one as it is.
    Insert,
    /// Update an existing record; a missing one is a rejection.
    Update,
    /// Create or update.
    Upsert,
    /// Delete the record.
    Delete,
    /// Set the record's mapped fields to null.
    ClearFields,
    /// Archive the record.
    Archive,
    /// Add the record to the audience (or update its member).
    Add,
    /// Remove it from the audience.
    Remove,
    /// Send the event.
    Track,
}

impl Action {
    /// The operation's name on the wire (HTTP and JSON-lines destinations).
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Insert => "insert",
            Action::Update => "update",
            Action::Upsert => "upsert",
            Action::Delete => "delete",
            Action::ClearFields => "clear",
            Action::Archive => "archive",
            Action::Add => "add",
            Action::Remove => "remove",
            Action::Track => "track",
        }
    }

    /// Actions on a row that left the model: they carry its last sent record.
    pub fn is_removal(&self) -> bool {
        matches!(self, Action::Delete | Action::ClearFields | Action::Remove)
    }
}

/// How CDC saw a row, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Changed,
    Unchanged,
    Removed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behaviour {
    pub sync_type: SyncType,
    pub mode: SyncMode,
    pub delete_behavior: DeleteBehavior,
}

impl Behaviour {
    pub fn of(spec: &SyncSpec) -> Behaviour {
        Behaviour {
            sync_type: spec.sync_type,
            mode: spec.mode,
            delete_behavior: spec.delete_behavior,
        }
    }

    /// The action for a row, and the operation it counts as; `None` when the
    /// sync sends nothing for it. A full resync ignores the snapshot: rows
    /// still in the model are sent as if they were new.
    pub fn action(&self, change: Change, full_resync: bool) -> Option<(Operation, Action)> {
        let operation = match change {
            Change::Added => Operation::Added,
            Change::Changed | Change::Unchanged => Operation::Changed,
            Change::Removed => Operation::Removed,
        };
        let action = match change {
            Change::Added => Some(self.entering_action()),
            Change::Changed | Change::Unchanged if full_resync => Some(self.entering_action()),
            Change::Changed => self.changed_action(),
            Change::Unchanged => (self.mode == SyncMode::All).then_some(Action::Upsert),
            Change::Removed => self.removed_action(),
        };
        action.map(|action| (operation, action))
    }

    /// For a row the destination has not seen.
    fn entering_action(&self) -> Action {
        match (self.sync_type, self.mode) {
            (SyncType::Event, _) => Action::Track,
            (_, SyncMode::Insert) => Action::Insert,
            (_, SyncMode::Update) => Action::Update,
            (_, SyncMode::Archive) => Action::Archive,
            (_, SyncMode::AddRemove) => Action::Add,
            (_, SyncMode::Upsert | SyncMode::Mirror | SyncMode::All) => Action::Upsert,
        }
    }

    fn changed_action(&self) -> Option<Action> {
        match (self.sync_type, self.mode) {
            // Events are facts; create-only and archive modes never update.
            (SyncType::Event, _) | (_, SyncMode::Insert | SyncMode::Archive) => None,
            (_, SyncMode::Update) => Some(Action::Update),
            (_, SyncMode::AddRemove) => Some(Action::Add),
            (_, SyncMode::Upsert | SyncMode::Mirror | SyncMode::All) => Some(Action::Upsert),
        }
    }

    fn removed_action(&self) -> Option<Action> {
        match (self.mode, self.delete_behavior) {
            (SyncMode::Insert | SyncMode::Archive | SyncMode::All, _) | (_, DeleteBehavior::DoNothing) => None,
            (SyncMode::AddRemove, _) => Some(Action::Remove),
            (_, DeleteBehavior::ClearFields) => Some(Action::ClearFields),
            (_, DeleteBehavior::Delete) => Some(Action::Delete),
        }
    }

    /// Whether a row that left the model, and was not sent, keeps its snapshot
    /// entry: create-only, archive and event syncs send a key once, ever, so
    /// they must remember it after it leaves.
    pub fn remembers_removed_rows(&self) -> bool {
        self.sync_type == SyncType::Event || matches!(self.mode, SyncMode::Insert | SyncMode::Archive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Change::{Added, Changed, Removed, Unchanged};

    fn behaviour(sync_type: SyncType, mode: SyncMode, delete_behavior: DeleteBehavior) -> Behaviour {
        Behaviour {
            sync_type,
            mode,
            delete_behavior,
        }
    }

    fn actions(b: Behaviour) -> [Option<Action>; 4] {
        [Added, Changed, Unchanged, Removed].map(|change| b.action(change, false).map(|(_, a)| a))
    }

    #[test]
    fn the_rules_of_every_mode() {
        use DeleteBehavior as D;
        use SyncMode as M;
        use SyncType as T;
        let table = [
            (
                behaviour(T::Object, M::Insert, D::DoNothing),
                [Some(Insert), None, None, None],
            ),
            (
                behaviour(T::Object, M::Update, D::DoNothing),
                [Some(Update), Some(Update), None, None],
            ),
            (
                behaviour(T::Object, M::Update, D::ClearFields),
                [Some(Update), Some(Update), None, Some(ClearFields)],
            ),
            (
                behaviour(T::Object, M::Upsert, D::DoNothing),
                [Some(Upsert), Some(Upsert), None, None],
            ),
            (
                behaviour(T::Object, M::Upsert, D::Delete),
                [Some(Upsert), Some(Upsert), None, Some(Delete)],
            ),
            (
                behaviour(T::Object, M::Mirror, D::Delete),
                [Some(Upsert), Some(Upsert), None, Some(Delete)],
            ),
            (
                behaviour(T::Object, M::Mirror, D::ClearFields),
                [Some(Upsert), Some(Upsert), None, Some(ClearFields)],
            ),
            (
                behaviour(T::Object, M::Archive, D::DoNothing),
                [Some(Archive), None, None, None],
            ),
            (
                behaviour(T::Object, M::All, D::DoNothing),
                [Some(Upsert), Some(Upsert), Some(Upsert), None],
            ),
            (
                behaviour(T::Audience, M::AddRemove, D::Delete),
                [Some(Add), Some(Add), None, Some(Remove)],
            ),
            (
                behaviour(T::Event, M::Insert, D::DoNothing),
                [Some(Track), None, None, None],
            ),
        ];
        for (b, expected) in table {
            assert_eq!(actions(b), expected, "{b:?}");
        }
    }

    #[test]
    fn full_resync_sends_every_row_still_in_the_model() {
        let insert = behaviour(SyncType::Object, SyncMode::Insert, DeleteBehavior::DoNothing);
        assert_eq!(insert.action(Unchanged, true), Some((Operation::Changed, Insert)));
        let mirror = behaviour(SyncType::Object, SyncMode::Mirror, DeleteBehavior::Delete);
        assert_eq!(mirror.action(Unchanged, true), Some((Operation::Changed, Upsert)));
        assert_eq!(mirror.action(Removed, true), Some((Operation::Removed, Delete)));
    }

    #[test]
    fn keys_sent_once_are_remembered() {
        assert!(behaviour(SyncType::Event, SyncMode::Insert, DeleteBehavior::DoNothing).remembers_removed_rows());
        assert!(behaviour(SyncType::Object, SyncMode::Insert, DeleteBehavior::DoNothing).remembers_removed_rows());
        assert!(!behaviour(SyncType::Object, SyncMode::Upsert, DeleteBehavior::DoNothing).remembers_removed_rows());
    }
}
