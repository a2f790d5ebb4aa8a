//! What a sync does with the rows of its model: its type, mode, delete
//! behaviour and field mappings, in Hightouch's and Census's words, and which
//! combinations each destination supports.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What the rows of a model are to the destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncType {
    /// Records (contacts, accounts, rows) the destination keeps and updates.
    #[default]
    Object,
    /// Membership of a list or audience: rows join it and leave it.
    Audience,
    /// Facts that happened once (events, conversions): each is sent once, never
    /// updated, keyed by its event id.
    Event,
}

/// How a sync treats the rows CDC finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Create only: rows whose key was never sent before.
    Insert,
    /// Update only: records that already exist in the destination; a row with
    /// no matching record is rejected.
    Update,
    /// Added and changed rows, created or updated.
    Upsert,
    /// Upsert, plus rows that left the model are removed from the destination.
    Mirror,
    /// Archive the records of rows that enter the model.
    Archive,
    /// Audience membership: added rows join, removed rows leave.
    AddRemove,
    /// No change data capture: every row, every run.
    All,
}

/// What a row that left the model does to its destination record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteBehavior {
    /// Leave the record as it is (the default, except in mirror mode).
    DoNothing,
    /// Set the record's mapped fields to null, keeping the record.
    ClearFields,
    /// Delete the record.
    Delete,
}

macro_rules! words {
    ($type:ty { $($variant:ident => $word:literal),* $(,)? }) => {
        impl $type {
            pub const ALL: &'static [$type] = &[$(<$type>::$variant),*];

            pub fn as_str(&self) -> &'static str {
                match self {
                    $(<$type>::$variant => $word),*
                }
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

words!(SyncType { Object => "object", Audience => "audience", Event => "event" });
words!(SyncMode {
    Insert => "insert",
    Update => "update",
    Upsert => "upsert",
    Mirror => "mirror",
    Archive => "archive",
    AddRemove => "add_remove",
    All => "all",
});
words!(DeleteBehavior {
    DoNothing => "do_nothing",
    ClearFields => "clear_fields",
    Delete => "delete",
});

impl SyncType {
    /// The modes that make sense for this type of sync, whatever the destination.
    pub fn modes(&self) -> &'static [SyncMode] {
        match self {
            SyncType::Object => &[
                SyncMode::Insert,
                SyncMode::Update,
                SyncMode::Upsert,
                SyncMode::Mirror,
                SyncMode::Archive,
                SyncMode::All,
            ],
            SyncType::Audience => &[SyncMode::AddRemove],
            SyncType::Event => &[SyncMode::Insert],
        }
    }
}

impl SyncMode {
    /// The delete behaviours this mode allows, the default first.
    pub fn delete_behaviors(&self) -> &'static [DeleteBehavior] {
        match self {
            // Removed rows are what mirror is for: it deletes or clears them.
            SyncMode::Mirror => &[DeleteBehavior::Delete, DeleteBehavior::ClearFields],
            SyncMode::Update | SyncMode::Upsert => &[
                DeleteBehavior::DoNothing,
                DeleteBehavior::ClearFields,
                DeleteBehavior::Delete,
            ],
            // Create-only, archive and no-CDC modes never touch a record for a
            // row that left the model; audiences remove the member.
            SyncMode::Insert | SyncMode::Archive | SyncMode::All => &[DeleteBehavior::DoNothing],
            SyncMode::AddRemove => &[DeleteBehavior::Delete],
        }
    }
}

/// The sync types, modes and delete behaviours one kind of destination
/// supports. A sync asking for anything else is refused when it is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub sync_types: &'static [SyncType],
    pub modes: &'static [SyncMode],
    pub delete_behaviors: &'static [DeleteBehavior],
}

impl Capabilities {
    /// Every sync type, mode and delete behaviour: for destinations that take
    /// whatever operation they are sent (a generic endpoint, a log).
    pub const ANY: Capabilities = Capabilities {
        sync_types: SyncType::ALL,
        modes: SyncMode::ALL,
        delete_behaviors: DeleteBehavior::ALL,
    };
}

/// One mapped field of a sync: where its value comes from, and the destination
/// field it goes to. Exactly one source: `from`, `value`, `variable` or
/// `template`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// The destination field. Dots nest objects (`address.city`); a trailing
    /// `[]` appends to an array (`tags[]`).
    pub to: String,
    /// A model column.
    #[serde(default)]
    pub from: Option<String>,
    /// A static value (string, number, boolean, null, list or map).
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// A value of the run: `sync_id`, `run_id` or `run_started_at`.
    #[serde(default)]
    pub variable: Option<Variable>,
    /// A Liquid template over the row: `{{ record['email'] | downcase | sha256 }}`.
    #[serde(default)]
    pub template: Option<String>,
    /// Converts the value to this type; a row whose value cannot be converted
    /// is rejected with the reason.
    #[serde(default)]
    pub cast: Option<Cast>,
}

impl FieldMapping {
    /// A plain column → field mapping.
    pub fn column(from: &str, to: &str) -> FieldMapping {
        FieldMapping {
            to: to.to_string(),
            from: Some(from.to_string()),
            value: None,
            variable: None,
            template: None,
            cast: None,
        }
    }

    /// Where the value comes from, for messages.
    pub fn describe_source(&self) -> String {
        match (&self.from, &self.value, &self.variable, &self.template) {
            (Some(column), ..) => format!("column {column:?}"),
            (_, Some(value), ..) => format!("value {value}"),
            (_, _, Some(variable), _) => format!("variable {}", variable.as_str()),
            (_, _, _, Some(template)) => format!("template {template:?}"),
            _ => "nothing".to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variable {
    SyncId,
    RunId,
    RunStartedAt,
}

words!(Variable {
    SyncId => "sync_id",
    RunId => "run_id",
    RunStartedAt => "run_started_at",
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cast {
    String,
    Integer,
    Float,
    Boolean,
    /// Parses text as JSON.
    Json,
    /// An ISO-8601 / RFC 3339 date-time, normalised to UTC.
    Timestamp,
}

words!(Cast {
    String => "string",
    Integer => "integer",
    Float => "float",
    Boolean => "boolean",
    Json => "json",
    Timestamp => "timestamp",
});

/// Which model column identifies the destination record, and the destination
/// field it is matched against (an email, an external id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordMatching {
    pub from: String,
    pub to: String,
}
