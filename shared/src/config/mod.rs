//! The config file schema: sources, models, destinations and syncs.
//!
//! A config is one YAML file or a directory of them. Every struct denies unknown
//! fields, and errors name the file, the line and the field. Secrets are written as
//! `${ENV_VAR}` references and stay unresolved in memory, on the wire and in the
//! state DB: each process resolves them from its own environment at the moment it
//! opens a connection (`expand_env`), so tasks on the queue never carry them.

mod destination;
mod parse;
mod sync;
pub mod yaml;

pub use destination::{
    read_settings, settings_map, BatchLimits, DeliveryLimits, DestinationConfig, DestinationProfile, DestinationTypes,
    FieldError,
};
pub use parse::env_references;
use yaml::Segment;

pub use sync::{Capabilities, Cast, DeleteBehavior, FieldMapping, RecordMatching, SyncMode, SyncType, Variable};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    #[serde(default)]
    pub destinations: BTreeMap<String, DestinationConfig>,
    #[serde(default)]
    pub syncs: BTreeMap<String, SyncConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    Postgres(PostgresSourceConfig),
    /// Amazon Redshift: PostgreSQL's wire protocol, read through a cursor.
    Redshift(RedshiftSourceConfig),
    Mysql(MysqlSourceConfig),
    /// Google BigQuery, over its REST API.
    Bigquery(BigquerySourceConfig),
    /// Snowflake, over the REST protocol its drivers speak.
    Snowflake(SnowflakeSourceConfig),
    /// Databricks SQL, over the Statement Execution API.
    Databricks(DatabricksSourceConfig),
    Sqlite(SqliteSourceConfig),
    Csv(CsvSourceConfig),
    /// CSV and JSON-lines files of a directory or an S3 prefix.
    Files(FilesSourceConfig),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSourceConfig {
    /// `postgres://user:${PGPASSWORD}@host:5432/db`
    pub url: String,
}

/// Amazon Redshift (or any PostgreSQL-protocol warehouse without
/// `COPY … TO STDOUT`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedshiftSourceConfig {
    /// `postgres://user:${REDSHIFT_PASSWORD}@cluster.region.redshift.amazonaws.com:5439/dev`
    pub url: String,
    /// Rows fetched from the cursor per round trip (default 10,000).
    #[serde(default)]
    pub fetch_rows: Option<u32>,
}

/// Google BigQuery: a service account's key, a project to run jobs in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BigquerySourceConfig {
    /// The project whose jobs run the queries (and is billed for them).
    pub project: String,
    /// The service account's JSON key, as text: `${BIGQUERY_CREDENTIALS}`.
    #[serde(default)]
    pub credentials_json: Option<String>,
    /// Or the path of the key file, relative to the config file.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Where the jobs run (`US`, `EU`, `europe-west1`, …); default: BigQuery's choice.
    #[serde(default)]
    pub location: Option<String>,
    /// Dataset that unqualified table names in a query refer to.
    #[serde(default)]
    pub dataset: Option<String>,
    /// Rows per result page (default 10,000; BigQuery also caps a page at 10 MB).
    #[serde(default)]
    pub page_rows: Option<u32>,
    /// How long a query may run before the read gives up (default 1h).
    #[serde(default, with = "optional_duration")]
    pub query_timeout: Option<Duration>,
    /// The API's base URL (default `https://bigquery.googleapis.com`).
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// Snowflake: an account, a user with a password or a key pair, and the
/// warehouse that runs the queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnowflakeSourceConfig {
    /// The account identifier: `myorg-myaccount`, or a locator with its
    /// region (`xy12345.eu-west-1`).
    pub account: String,
    pub user: String,
    /// `${SNOWFLAKE_PASSWORD}`; or a key pair:
    #[serde(default)]
    pub password: Option<String>,
    /// The user's RSA private key in PEM, as text: `${SNOWFLAKE_PRIVATE_KEY}`.
    #[serde(default)]
    pub private_key: Option<String>,
    /// Or the path of the PEM file, relative to the config file.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    #[serde(default)]
    pub warehouse: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default)]
    pub schema: Option<String>,
    /// How long a query may run before the read gives up (default 1h).
    #[serde(default, with = "optional_duration")]
    pub query_timeout: Option<Duration>,
    /// Result chunks downloaded at once (default 4).
    #[serde(default)]
    pub chunk_downloads: Option<u32>,
    /// The account's URL (default `https://<account>.snowflakecomputing.com`).
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// A Databricks SQL warehouse: a workspace, a warehouse, and a personal
/// access token or a service principal's OAuth credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabricksSourceConfig {
    /// The workspace URL: `https://adb-1234567890123456.7.azuredatabricks.net`.
    pub host: String,
    pub warehouse_id: String,
    /// A personal access token: `${DATABRICKS_TOKEN}`; or OAuth M2M:
    #[serde(default)]
    pub token: Option<String>,
    /// The service principal's client id (OAuth machine-to-machine).
    #[serde(default)]
    pub client_id: Option<String>,
    /// `${DATABRICKS_CLIENT_SECRET}`.
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub catalog: Option<String>,
    #[serde(default)]
    pub schema: Option<String>,
    /// How long a statement may run before the read cancels it (default 1h).
    #[serde(default, with = "optional_duration")]
    pub query_timeout: Option<Duration>,
    /// Result chunks downloading at once (default 4).
    #[serde(default)]
    pub chunk_downloads: Option<u32>,
}

/// MySQL or MariaDB.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSourceConfig {
    /// `mysql://user:${MYSQL_PASSWORD}@host:3306/db`
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteSourceConfig {
    /// Path of the database file, relative to the config file.
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSourceConfig {
    /// Directory holding the CSV files, relative to the config file.
    pub path: PathBuf,
}

/// Files of a local directory or an object-store prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSourceConfig {
    /// A directory (relative to the config file),
    /// `s3://bucket/prefix?region=…&endpoint=…` with credentials from the
    /// usual `AWS_*` variables, or `gs://bucket/prefix` with credentials as
    /// Google's clients find them.
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub source: String,
    /// SQL, for database sources.
    #[serde(default)]
    pub query: Option<String>,
    /// A table or view of a database source instead of a query:
    /// `schema.name` or `name`, written as the database spells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// With `table`: the columns to read (default: all of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// With `table`: a SQL condition rows must meet, as in a `WHERE` clause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// File name inside the source directory, for file sources; with a
    /// `files` source a pattern (`exports/customers-*.jsonl`) reads every
    /// file it matches, in name order.
    #[serde(default)]
    pub file: Option<String>,
    /// With a `files` source: `csv`, `jsonl` or `parquet` (default: from the extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The column whose value identifies a row; unique and non-null.
    pub primary_key: String,
    /// How many extract tasks read the model at once, each a range of its
    /// primary key: `auto` (the default: PostgreSQL and MySQL table models
    /// with an integer key, one task per two million keys) or a number (any
    /// database model with an integer or text key; 1 reads it in one query).
    #[serde(default, skip_serializing_if = "ExtractTasks::is_auto")]
    pub extract_tasks: ExtractTasks,
}

/// A model's `extract_tasks`: `auto` or a count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExtractTasks {
    #[default]
    Auto,
    Count(u32),
}

impl ExtractTasks {
    /// Most extract tasks a model's reading is split into.
    pub const MAX: u32 = 64;

    pub fn is_auto(&self) -> bool {
        *self == ExtractTasks::Auto
    }
}

impl Serialize for ExtractTasks {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ExtractTasks::Auto => serializer.serialize_str("auto"),
            ExtractTasks::Count(count) => serializer.serialize_u32(*count),
        }
    }
}

impl<'de> Deserialize<'de> for ExtractTasks {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Count(u32),
            Word(String),
        }
        match Written::deserialize(deserializer) {
            Ok(Written::Count(count)) => Ok(ExtractTasks::Count(count)),
            Ok(Written::Word(word)) if word == "auto" => Ok(ExtractTasks::Auto),
            _ => Err(serde::de::Error::custom(
                "extract_tasks is `auto` or a number of tasks such as 4",
            )),
        }
    }
}

impl ModelConfig {
    /// A model reading `query` from `source`, keyed by `primary_key`.
    pub fn query(source: &str, query: &str, primary_key: &str) -> ModelConfig {
        ModelConfig {
            source: source.to_string(),
            query: Some(query.to_string()),
            table: None,
            columns: Vec::new(),
            filter: None,
            file: None,
            format: None,
            primary_key: primary_key.to_string(),
            extract_tasks: ExtractTasks::Auto,
        }
    }

    /// The config key that says what the model reads: `query`, `table` or `file`.
    pub fn definition_key(&self) -> &'static str {
        if self.table.is_some() {
            "table"
        } else if self.file.is_some() {
            "file"
        } else {
            "query"
        }
    }
}

/// Default cap on a destination's `Retry-After` and on the fleet pause it causes.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// `DEFAULT_MAX_RETRY_AFTER`, for `#[serde(default = …)]`.
pub fn default_max_retry_after() -> Duration {
    DEFAULT_MAX_RETRY_AFTER
}

impl SourceConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Postgres(_) => "postgres",
            SourceConfig::Redshift(_) => "redshift",
            SourceConfig::Mysql(_) => "mysql",
            SourceConfig::Bigquery(_) => "bigquery",
            SourceConfig::Snowflake(_) => "snowflake",
            SourceConfig::Databricks(_) => "databricks",
            SourceConfig::Sqlite(_) => "sqlite",
            SourceConfig::Csv(_) => "csv",
            SourceConfig::Files(_) => "files",
        }
    }

    /// The settings whose `${VAR}` references are resolved when Ebb connects,
    /// as (key path below the source, text).
    pub fn expanded_settings(&self) -> Vec<(Vec<String>, &str)> {
        match self {
            SourceConfig::Postgres(c) => vec![(vec!["url".into()], c.url.as_str())],
            SourceConfig::Redshift(c) => vec![(vec!["url".into()], c.url.as_str())],
            SourceConfig::Mysql(c) => vec![(vec!["url".into()], c.url.as_str())],
            SourceConfig::Bigquery(c) => c
                .credentials_json
                .iter()
                .map(|json| (vec!["credentials_json".to_string()], json.as_str()))
                .collect(),
            SourceConfig::Snowflake(c) => [("password", &c.password), ("private_key", &c.private_key)]
                .into_iter()
                .filter_map(|(key, value)| value.as_deref().map(|text| (vec![key.to_string()], text)))
                .collect(),
            SourceConfig::Databricks(c) => [
                ("token", &c.token),
                ("client_id", &c.client_id),
                ("client_secret", &c.client_secret),
            ]
            .into_iter()
            .filter_map(|(key, value)| value.as_deref().map(|text| (vec![key.to_string()], text)))
            .collect(),
            SourceConfig::Sqlite(_) | SourceConfig::Csv(_) | SourceConfig::Files(_) => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    pub model: String,
    pub destination: String,
    /// object (default), audience or event.
    #[serde(default, rename = "type")]
    pub sync_type: SyncType,
    pub mode: SyncMode,
    /// What a row that left the model does to its record; the mode's default
    /// when absent (do_nothing, or delete for mirror and add_remove).
    #[serde(default)]
    pub delete_behavior: Option<DeleteBehavior>,
    /// Model column → destination field. Without mappings every column is sent
    /// under its own name.
    #[serde(default)]
    pub mappings: Vec<FieldMapping>,
    /// Leave fields whose value is null out of the record instead of sending null.
    #[serde(default)]
    pub skip_nulls: bool,
    /// The model column that identifies the destination record, and the
    /// destination field it matches.
    #[serde(default)]
    pub record_matching: Option<RecordMatching>,
    #[serde(default)]
    pub schedule: Option<Schedule>,
    /// Fixed number of shards; by default the planner sizes shards from the row counts.
    #[serde(default)]
    pub shards: Option<usize>,
    /// Upper bound on the rows of one shard when the planner sizes them.
    #[serde(default)]
    pub max_rows_per_shard: Option<u64>,
    /// Keep the requests each run sends and the answers it gets, with the
    /// rows they carried (`ebb runs requests`); `false` keeps none, for
    /// syncs whose payloads must not be stored.
    #[serde(default = "keep_requests")]
    pub live_debugger: bool,
}

fn keep_requests() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// `every: 15m` — runs at every multiple of the interval since the Unix epoch.
    #[serde(with = "humantime_serde_compat")]
    pub every: Duration,
}

/// `30s`, `15m`, `1h` in config files and on the wire, for `#[serde(with = …)]`.
pub mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e} (write e.g. 30s, 15m, 1h)")))
    }
}

/// An optional `30s`/`15m`/`1h`, for `#[serde(default, with = …)]`.
pub mod optional_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::humantime_serde_compat::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|text| {
            humantime::parse_duration(&text).map_err(|e| {
                serde::de::Error::custom(format!("invalid duration {text:?}: {e} (write e.g. 30s, 15m, 1h)"))
            })
        })
        .transpose()
    }
}

/// Everything a worker needs to run one sync's tasks: the sync with its model,
/// source and destination inlined, secrets still as `${ENV_VAR}` references.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncSpec {
    pub name: String,
    pub model_name: String,
    pub model: ModelConfig,
    pub source: SourceConfig,
    pub destination_name: String,
    pub destination: DestinationConfig,
    #[serde(default)]
    pub sync_type: SyncType,
    pub mode: SyncMode,
    /// Resolved: the configured behaviour or the mode's default.
    #[serde(default = "default_delete_behavior")]
    pub delete_behavior: DeleteBehavior,
    pub mappings: Vec<FieldMapping>,
    #[serde(default)]
    pub skip_nulls: bool,
    #[serde(default)]
    pub record_matching: Option<RecordMatching>,
    pub shards: Option<usize>,
    pub max_rows_per_shard: Option<u64>,
    #[serde(default = "keep_requests")]
    pub live_debugger: bool,
}

fn default_delete_behavior() -> DeleteBehavior {
    DeleteBehavior::DoNothing
}

impl SyncConfig {
    /// The configured delete behaviour, or the mode's default.
    pub fn resolved_delete_behavior(&self) -> DeleteBehavior {
        self.delete_behavior.unwrap_or(self.mode.delete_behaviors()[0])
    }
}

/// A config error that names what to fix: file, line when known, and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{}: {}", file.display(), line, self.message),
            (Some(file), None) => write!(f, "{}: {}", file.display(), self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl ConfigError {
    fn new(message: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            line: None,
            message: message.into(),
        }
    }

    fn in_file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: Some(file.to_path_buf()),
            line: None,
            message: message.into(),
        }
    }
}

/// A loaded, validated config: every reference resolves and every sync is runnable.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    pub sources: BTreeMap<String, SourceConfig>,
    pub models: BTreeMap<String, ModelConfig>,
    pub destinations: BTreeMap<String, DestinationConfig>,
    pub syncs: BTreeMap<String, SyncConfig>,
}

/// Every problem a config has, each naming its file and line: a config is
/// refused with all of them, not the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}

/// Settings of a source that only make sense together.
fn check_source(name: &str, source: &SourceConfig) -> Vec<Problem> {
    let at = |field: &str| problem_path(&["sources", name, field]);
    let mut problems = Vec::new();
    if let SourceConfig::Bigquery(c) = source {
        match (&c.credentials_json, &c.credentials_file) {
            (Some(_), Some(_)) => problems.push(problem(
                at("credentials_file"),
                format!("source {name:?}: set credentials_json or credentials_file, not both"),
            )),
            (None, None) => problems.push(problem(
                at("project"),
                format!(
                    "source {name:?}: set credentials_json: ${{BIGQUERY_CREDENTIALS}} (the service account's JSON key) \
                     or credentials_file: PATH"
                ),
            )),
            _ => {}
        }
        if c.page_rows.is_some_and(|rows| rows == 0 || rows > 100_000) {
            problems.push(problem(
                at("page_rows"),
                format!("source {name:?}: page_rows must be between 1 and 100000"),
            ));
        }
        if c.project.trim().is_empty() {
            problems.push(problem(at("project"), format!("source {name:?}: project is empty")));
        }
    }
    if let SourceConfig::Snowflake(c) = source {
        let ways = [
            c.password.is_some(),
            c.private_key.is_some(),
            c.private_key_file.is_some(),
        ];
        match ways.iter().filter(|set| **set).count() {
            1 => {}
            0 => problems.push(problem(
                at("user"),
                format!(
                    "source {name:?}: set password: ${{SNOWFLAKE_PASSWORD}}, or a key pair with \
                     private_key: ${{SNOWFLAKE_PRIVATE_KEY}} or private_key_file: PATH"
                ),
            )),
            _ => problems.push(problem(
                at("password"),
                format!("source {name:?}: set one of password, private_key and private_key_file"),
            )),
        }
        if c.chunk_downloads.is_some_and(|n| n == 0 || n > 64) {
            problems.push(problem(
                at("chunk_downloads"),
                format!("source {name:?}: chunk_downloads must be between 1 and 64"),
            ));
        }
        for (key, value) in [("account", &c.account), ("user", &c.user)] {
            if value.trim().is_empty() {
                problems.push(problem(at(key), format!("source {name:?}: {key} is empty")));
            }
        }
    }
    if let SourceConfig::Databricks(c) = source {
        match (&c.token, &c.client_id, &c.client_secret) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => {}
            (Some(_), _, _) => problems.push(problem(
                at("token"),
                format!("source {name:?}: set token, or client_id with client_secret, not both"),
            )),
            (None, Some(_), None) | (None, None, Some(_)) => problems.push(problem(
                at(if c.client_id.is_some() {
                    "client_id"
                } else {
                    "client_secret"
                }),
                format!("source {name:?}: OAuth needs both client_id and client_secret"),
            )),
            (None, None, None) => problems.push(problem(
                at("host"),
                format!(
                    "source {name:?}: set token: ${{DATABRICKS_TOKEN}} (a personal access token), or a service \
                     principal's client_id and client_secret: ${{DATABRICKS_CLIENT_SECRET}}"
                ),
            )),
        }
        if !(c.host.starts_with("https://") || c.host.starts_with("http://")) {
            problems.push(problem(
                at("host"),
                format!("source {name:?}: host must be the workspace URL, https://…"),
            ));
        }
        if c.chunk_downloads.is_some_and(|n| n == 0 || n > 64) {
            problems.push(problem(
                at("chunk_downloads"),
                format!("source {name:?}: chunk_downloads must be between 1 and 64"),
            ));
        }
    }
    if let SourceConfig::Redshift(c) = source {
        if c.fetch_rows.is_some_and(|rows| rows == 0 || rows > 1_000_000) {
            problems.push(problem(
                at("fetch_rows"),
                format!("source {name:?}: fetch_rows must be between 1 and 1000000"),
            ));
        }
    }
    problems
}

/// A model reads exactly one thing its source can read: a CSV source a `file`,
/// a database source a `query` or a `table` (with optional `columns` and
/// `filter`).
fn check_model_definition(name: &str, model: &ModelConfig, source: &SourceConfig) -> Vec<Problem> {
    let at = |field: &str| problem_path(&["models", name, field]);
    let mut problems = Vec::new();
    let has_query = model.query.as_deref().is_some_and(|q| !q.trim().is_empty());
    let table = model.table.as_deref().map(str::trim);
    if let Some(format) = &model.format {
        if !matches!(source, SourceConfig::Files(_)) {
            problems.push(problem(
                at("format"),
                format!("model {name:?}: `format` goes with a files source"),
            ));
        } else if !matches!(format.as_str(), "csv" | "jsonl" | "parquet") {
            problems.push(problem(
                at("format"),
                format!("model {name:?}: format {format:?} is not one Ebb reads (csv, jsonl, parquet)"),
            ));
        }
    }
    if matches!(source, SourceConfig::Csv(_) | SourceConfig::Files(_)) {
        if model.file.is_none() {
            problems.push(problem(
                at("source"),
                format!(
                    "model {name:?} reads file source {:?}: set `file` to the file's name (or a pattern such as \
                     exports/*.jsonl)",
                    model.source
                ),
            ));
        }
        for (key, set) in [("query", model.query.is_some()), ("table", table.is_some())] {
            if set {
                problems.push(problem(
                    at(key),
                    format!(
                        "model {name:?} reads file source {:?}: `{key}` is for database sources; set `file` instead",
                        model.source
                    ),
                ));
            }
        }
        if model.extract_tasks != ExtractTasks::Auto {
            problems.push(problem(
                at("extract_tasks"),
                format!("model {name:?} reads files: `extract_tasks` goes with database sources; remove it"),
            ));
        }
        return problems;
    }
    if let ExtractTasks::Count(count) = model.extract_tasks {
        if !(1..=ExtractTasks::MAX).contains(&count) {
            problems.push(problem(
                at("extract_tasks"),
                format!(
                    "model {name:?}: extract_tasks {count} is out of range: write `auto` or 1 to {}",
                    ExtractTasks::MAX
                ),
            ));
        }
    }
    if model.file.is_some() {
        problems.push(problem(
            at("file"),
            format!(
                "model {name:?} reads database source {:?}: `file` is for file sources; set `query` or `table` instead",
                model.source
            ),
        ));
    }
    match (has_query, table) {
        (true, Some(_)) => problems.push(problem(
            at("table"),
            format!("model {name:?} sets both `query` and `table`: keep one"),
        )),
        (false, None) => problems.push(problem(
            at("query"),
            format!(
                "model {name:?} reads database source {:?}: set `query` (SQL) or `table` (schema.name)",
                model.source
            ),
        )),
        (false, Some("")) => problems.push(problem(
            at("table"),
            format!("model {name:?}: `table` is empty; write schema.name or name"),
        )),
        (false, Some(table)) => {
            if table.split('.').count() > 3 || table.split('.').any(|part| part.trim().is_empty()) {
                problems.push(problem(
                    at("table"),
                    format!("model {name:?}: table {table:?} is not a table name: write name, schema.name or database.schema.name"),
                ));
            }
            if !model.columns.is_empty() && !model.columns.contains(&model.primary_key) {
                problems.push(problem(
                    at("columns"),
                    format!(
                        "model {name:?} reads columns {} but not its primary key {:?}: add it to `columns`",
                        model.columns.join(", "),
                        model.primary_key
                    ),
                ));
            }
            if let Some(empty) = model.columns.iter().find(|c| c.trim().is_empty()) {
                problems.push(problem(
                    at("columns"),
                    format!("model {name:?}: a column name in `columns` is empty ({empty:?})"),
                ));
            }
        }
        (true, None) => {}
    }
    if table.is_none() {
        for (key, set) in [
            ("columns", !model.columns.is_empty()),
            ("filter", model.filter.is_some()),
        ] {
            if set {
                problems.push(problem(
                    at(key),
                    format!("model {name:?}: `{key}` goes with `table`; with a `query`, write it in the SQL"),
                ));
            }
        }
    }
    problems
}

/// A problem found in a loaded config, at the path of the key at fault.
#[derive(Debug, Clone)]
struct Problem {
    path: Vec<Segment>,
    message: String,
}

fn problem(path: Vec<Segment>, message: String) -> Problem {
    Problem { path, message }
}

/// Where every item of a config was written: its file, and the line of each key.
#[derive(Debug, Clone, Default)]
pub struct Locations {
    files: Vec<(PathBuf, yaml::YamlIndex)>,
    /// (section, name) → index in `files`.
    items: BTreeMap<(String, String), usize>,
}

impl Locations {
    /// An error about the key at `path` (`["syncs", "crm", "mode"]`), with the
    /// file and line it was written at.
    pub fn error(&self, path: &[Segment], message: impl Into<String>) -> ConfigError {
        let file = match path {
            [Segment::Key(section), Segment::Key(name), ..] => {
                self.items.get(&(section.clone(), name.clone())).copied()
            }
            _ => None,
        }
        .or((self.files.len() == 1).then_some(0));
        match file {
            Some(i) => ConfigError {
                file: Some(self.files[i].0.clone()),
                line: self.files[i].1.line_of(path),
                message: message.into(),
            },
            None => ConfigError::new(message),
        }
    }

    /// `error` for a path written as keys.
    pub fn error_at(&self, path: &[&str], message: impl Into<String>) -> ConfigError {
        let path: Vec<Segment> = path.iter().map(|p| Segment::key(p)).collect();
        self.error(&path, message)
    }
}

impl Config {
    /// Loads one YAML file, or every `*.yaml` / `*.yml` file of a directory,
    /// reading destinations as `types` say.
    pub fn load(path: &Path, types: &dyn DestinationTypes) -> Result<Config, ConfigErrors> {
        Config::load_located(path, types).map(|(config, _)| config)
    }

    /// `load`, and where each item and key was written.
    pub fn load_located(path: &Path, types: &dyn DestinationTypes) -> Result<(Config, Locations), ConfigErrors> {
        let files = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| ConfigError::in_file(path, format!("cannot read config directory: {e}")))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(ConfigError::in_file(path, "the directory holds no *.yaml or *.yml file").into());
            }
            files
        } else {
            vec![path.to_path_buf()]
        };
        let mut texts = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| ConfigError::in_file(&file, format!("cannot read config file: {e}")))?;
            let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
            texts.push((file, text, base));
        }
        Config::from_texts(path, texts, types)
    }

    /// Parses one YAML document, as if it were a file named `name` in `base_dir`.
    pub fn from_yaml_str(
        name: &Path,
        text: &str,
        base_dir: &Path,
        types: &dyn DestinationTypes,
    ) -> Result<Config, ConfigErrors> {
        Config::from_texts(
            name,
            vec![(name.to_path_buf(), text.to_string(), base_dir.to_path_buf())],
            types,
        )
        .map(|(config, _)| config)
    }

    /// Parses, merges and validates files given as (name, text, directory that
    /// relative paths start from).
    fn from_texts(
        given: &Path,
        texts: Vec<(PathBuf, String, PathBuf)>,
        types: &dyn DestinationTypes,
    ) -> Result<(Config, Locations), ConfigErrors> {
        let mut config = Config::default();
        let mut locations = Locations::default();
        let mut errors = Vec::new();
        for (file, text, base) in texts {
            match parse::parse_file(&file, &text, &base, types) {
                Ok(parsed) => {
                    let index = locations.files.len();
                    errors.extend(config.merge(parsed.sections, &file, &parsed.index, &base, index, &mut locations));
                    locations.files.push((file, parsed.index));
                }
                Err(found) => errors.extend(found),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        if config.sources.is_empty()
            && config.models.is_empty()
            && config.destinations.is_empty()
            && config.syncs.is_empty()
        {
            return Err(ConfigError::in_file(
                given,
                "the config defines nothing: add sources, models, destinations and syncs (`ebb quickstart` writes an example)",
            )
            .into());
        }
        let problems = config.validate(types);
        if !problems.is_empty() {
            return Err(ConfigErrors(
                problems
                    .iter()
                    .map(|p| locations.error(&p.path, p.message.clone()))
                    .collect(),
            ));
        }
        Ok((config, locations))
    }

    /// Adds one file's items; an item another file already defines is an error
    /// naming both files.
    fn merge(
        &mut self,
        file: ConfigFile,
        path: &Path,
        index: &yaml::YamlIndex,
        base: &Path,
        file_index: usize,
        locations: &mut Locations,
    ) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut insert = |section: &str, name: &str| -> bool {
            let id = (section.to_string(), name.to_string());
            if let Some(&first) = locations.items.get(&id) {
                let line = index.line_of(&[Segment::key(section), Segment::key(name)]);
                let first_file = &locations.files[first].0;
                let first_line = locations.files[first]
                    .1
                    .line_of(&[Segment::key(section), Segment::key(name)])
                    .map(|l| format!(":{l}"))
                    .unwrap_or_default();
                errors.push(ConfigError {
                    file: Some(path.to_path_buf()),
                    line,
                    message: format!(
                        "{} {name:?} is already defined in {}{first_line}",
                        parse::singular(section),
                        first_file.display()
                    ),
                });
                return false;
            }
            locations.items.insert(id, file_index);
            true
        };
        let absolute = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        for (name, source) in file.sources {
            let source = match source {
                SourceConfig::Sqlite(c) => SourceConfig::Sqlite(SqliteSourceConfig {
                    path: absolute(&c.path),
                }),
                SourceConfig::Csv(c) => SourceConfig::Csv(CsvSourceConfig {
                    path: absolute(&c.path),
                }),
                SourceConfig::Bigquery(c) => SourceConfig::Bigquery(BigquerySourceConfig {
                    credentials_file: c.credentials_file.as_deref().map(absolute),
                    ..c
                }),
                SourceConfig::Files(c) if !c.url.contains("://") => SourceConfig::Files(FilesSourceConfig {
                    url: absolute(Path::new(&c.url)).display().to_string(),
                }),
                SourceConfig::Snowflake(c) => SourceConfig::Snowflake(SnowflakeSourceConfig {
                    private_key_file: c.private_key_file.as_deref().map(absolute),
                    ..c
                }),
                other => other,
            };
            if insert("sources", &name) {
                self.sources.insert(name, source);
            }
        }
        for (name, model) in file.models {
            if insert("models", &name) {
                self.models.insert(name, model);
            }
        }
        for (name, destination) in file.destinations {
            if insert("destinations", &name) {
                self.destinations.insert(name, destination);
            }
        }
        for (name, sync) in file.syncs {
            if insert("syncs", &name) {
                self.syncs.insert(name, sync);
            }
        }
        errors
    }

    /// Every reference resolves and every setting fits the others.
    fn validate(&self, types: &dyn DestinationTypes) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (name, source) in &self.sources {
            problems.extend(check_source(name, source));
        }
        for (name, model) in &self.models {
            let at = |field: &str| problem_path(&["models", name.as_str(), field]);
            if model.primary_key.trim().is_empty() {
                problems.push(problem(
                    at("primary_key"),
                    format!("model {name:?} needs a primary_key column"),
                ));
            }
            let Some(source) = self.sources.get(&model.source) else {
                problems.push(problem(
                    at("source"),
                    format!(
                        "model {name:?} uses source {:?}, which is not defined (defined: {})",
                        model.source,
                        names(&self.sources)
                    ),
                ));
                continue;
            };
            problems.extend(check_model_definition(name, model, source));
        }
        let mut profiles = BTreeMap::new();
        for (name, destination) in &self.destinations {
            match types.profile(destination) {
                Ok(profile) => {
                    profiles.insert(name.as_str(), profile);
                }
                Err(message) => problems.push(problem(
                    problem_path(&["destinations", name.as_str()]),
                    format!("destination {name:?}: {message}"),
                )),
            }
        }
        for (name, sync) in &self.syncs {
            let at = |field: &str| problem_path(&["syncs", name.as_str(), field]);
            if !self.models.contains_key(&sync.model) {
                problems.push(problem(
                    at("model"),
                    format!(
                        "sync {name:?} uses model {:?}, which is not defined (defined: {})",
                        sync.model,
                        names(&self.models)
                    ),
                ));
            }
            match self.destinations.get(&sync.destination) {
                Some(destination) => {
                    let capabilities = profiles.get(sync.destination.as_str()).map(|p| &p.capabilities);
                    if let Err(problem) = check_sync_behaviour(name, sync, &sync.destination, destination, capabilities)
                    {
                        problems.push(problem);
                    }
                }
                None => problems.push(problem(
                    at("destination"),
                    format!(
                        "sync {name:?} uses destination {:?}, which is not defined (defined: {})",
                        sync.destination,
                        names(&self.destinations)
                    ),
                )),
            }
            problems.extend(check_mappings(name, sync));
            if sync.shards == Some(0) || sync.shards.is_some_and(|n| n > crate::hashing::BUCKET_COUNT) {
                problems.push(problem(
                    at("shards"),
                    format!(
                        "sync {name:?}: shards must be between 1 and {}",
                        crate::hashing::BUCKET_COUNT
                    ),
                ));
            }
            if let Some(schedule) = &sync.schedule {
                if schedule.every < Duration::from_secs(1) {
                    problems.push(problem(
                        problem_path(&["syncs", name.as_str(), "schedule", "every"]),
                        format!("sync {name:?}: schedule.every must be at least 1s"),
                    ));
                }
            }
        }
        problems
    }

    /// The self-contained description of a sync that tasks carry.
    pub fn sync_spec(&self, sync_name: &str) -> Result<SyncSpec, ConfigError> {
        let sync = self.syncs.get(sync_name).ok_or_else(|| {
            ConfigError::new(format!("no sync named {sync_name:?} (defined: {})", names(&self.syncs)))
        })?;
        let model = self.models[&sync.model].clone();
        Ok(SyncSpec {
            name: sync_name.to_string(),
            model_name: sync.model.clone(),
            source: self.sources[&model.source].clone(),
            model,
            destination_name: sync.destination.clone(),
            destination: self.destinations[&sync.destination].clone(),
            sync_type: sync.sync_type,
            mode: sync.mode,
            delete_behavior: sync.resolved_delete_behavior(),
            mappings: sync.mappings.clone(),
            skip_nulls: sync.skip_nulls,
            record_matching: sync.record_matching.clone(),
            shards: sync.shards,
            max_rows_per_shard: sync.max_rows_per_shard,
            live_debugger: sync.live_debugger,
        })
    }
}

fn listed<T: fmt::Display>(items: &[T]) -> String {
    items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

/// The sync's type, mode and delete behaviour fit each other and the destination.
fn check_sync_behaviour(
    name: &str,
    sync: &SyncConfig,
    destination_name: &str,
    destination: &DestinationConfig,
    capabilities: Option<&Capabilities>,
) -> Result<(), Problem> {
    let (kind, mode, sync_type) = (destination.kind.as_str(), sync.mode, sync.sync_type);
    let at = |field: &str| problem_path(&["syncs", name, field]);
    let fail = |field: &str, message: String| {
        Err(Problem {
            path: at(field),
            message,
        })
    };
    if !sync_type.modes().contains(&mode) {
        return fail(
            "mode",
            format!(
                "sync {name:?} is an {sync_type} sync and asks for mode {mode}; {sync_type} syncs support: {}",
                listed(sync_type.modes())
            ),
        );
    }
    // A destination without a profile is reported on its own.
    let Some(capabilities) = capabilities else {
        return Ok(());
    };
    if !capabilities.sync_types.contains(&sync_type) {
        return fail(
            "type",
            format!(
                "sync {name:?} is an {sync_type} sync, which {kind} destination {destination_name:?} does not support (supported: {})",
                listed(capabilities.sync_types)
            ),
        );
    }
    if !capabilities.modes.contains(&mode) {
        return fail(
            "mode",
            format!(
                "sync {name:?} asks for mode {mode}, which {kind} destination {destination_name:?} does not support (supported: {})",
                listed(capabilities.modes)
            ),
        );
    }
    let behavior = sync.resolved_delete_behavior();
    let behavior_field = if sync.delete_behavior.is_some() {
        "delete_behavior"
    } else {
        "mode"
    };
    if !mode.delete_behaviors().contains(&behavior) {
        return fail(
            behavior_field,
            format!(
                "sync {name:?}: mode {mode} does not go with delete_behavior {behavior} (it allows: {})",
                listed(mode.delete_behaviors())
            ),
        );
    }
    if !capabilities.delete_behaviors.contains(&behavior) {
        return fail(
            behavior_field,
            format!(
                "sync {name:?} asks for delete_behavior {behavior}, which {kind} destination {destination_name:?} does not support (supported: {})",
                listed(capabilities.delete_behaviors)
            ),
        );
    }
    Ok(())
}

fn problem_path(keys: &[&str]) -> Vec<Segment> {
    keys.iter().map(|k| Segment::key(k)).collect()
}

/// Every mapping names one source of its value and a field path, and no field
/// is written twice.
fn check_mappings(name: &str, sync: &SyncConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (index, mapping) in sync.mappings.iter().enumerate() {
        let at = |field: &str| {
            let mut path = problem_path(&["syncs", name, "mappings"]);
            path.push(Segment::Index(index));
            path.push(Segment::key(field));
            path
        };
        let sources = [
            mapping.from.is_some(),
            mapping.value.is_some(),
            mapping.variable.is_some(),
            mapping.template.is_some(),
        ]
        .iter()
        .filter(|set| **set)
        .count();
        if sources != 1 {
            problems.push(Problem {
                path: at("to"),
                message: format!(
                    "sync {name:?}, mapping to {:?}: give exactly one of `from` (a column), `value`, `variable` or `template` (found {sources})",
                    mapping.to
                ),
            });
        }
        if let Err(reason) = crate::config::field_path(&mapping.to) {
            problems.push(Problem {
                path: at("to"),
                message: format!("sync {name:?}, mapping to {:?}: {reason}", mapping.to),
            });
        }
        if !mapping.to.ends_with("[]") && !seen.insert(&mapping.to) {
            problems.push(Problem {
                path: at("to"),
                message: format!("sync {name:?} maps two values to the field {:?}", mapping.to),
            });
        }
    }
    if let Some(matching) = &sync.record_matching {
        if matching.from.trim().is_empty() || matching.to.trim().is_empty() {
            problems.push(Problem {
                path: problem_path(&["syncs", name, "record_matching"]),
                message: format!(
                    "sync {name:?}: record_matching needs both `from` (a model column) and `to` (a destination field)"
                ),
            });
        }
    }
    problems
}

/// One step of a destination field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStep {
    /// A field of an object.
    Field(String),
    /// A new element appended to the array in this field.
    Append(String),
}

/// Splits `address.city` or `tags[]` into steps; only the last step may append.
pub fn field_path(to: &str) -> Result<Vec<PathStep>, String> {
    let parts: Vec<&str> = to.split('.').collect();
    let mut steps = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let (field, append) = match part.strip_suffix("[]") {
            Some(field) => (field, true),
            None => (*part, false),
        };
        if field.is_empty() {
            return Err("a field name in the path is empty (write e.g. `address.city` or `tags[]`)".to_string());
        }
        if field.contains('[') || field.contains(']') {
            return Err(format!(
                "{field:?}: only a trailing `[]` (append to an array) is allowed"
            ));
        }
        if append && i + 1 != parts.len() {
            return Err("`[]` (append to an array) may only end the path".to_string());
        }
        steps.push(if append {
            PathStep::Append(field.to_string())
        } else {
            PathStep::Field(field.to_string())
        });
    }
    Ok(steps)
}

fn names<T>(map: &BTreeMap<String, T>) -> String {
    if map.is_empty() {
        "none".to_string()
    } else {
        map.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Replaces every `${NAME}` with the environment variable `NAME`. `what` names the
/// setting in the error, never the value.
pub fn expand_env(text: &str, what: &str) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| ConfigError::new(format!("{what}: unterminated `${{` (write `${{NAME}}`)")))?;
        let name = &after[..end];
        let value = std::env::var(name).map_err(|_| {
            ConfigError::new(format!(
                "{what} references the environment variable {name}, which is not set"
            ))
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
