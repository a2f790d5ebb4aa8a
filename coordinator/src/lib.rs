//! Ebb's coordinator and the `ebb` command.
//!
//! The coordinator plans and tracks runs, commits snapshot pointers, hands out
//! fleet-wide delivery leases and serves the REST API; it never sees row data.
//! The `ebb` binary embeds the worker too, for `ebb worker` and `ebb standalone`.

pub mod api;
pub mod check;
pub mod cli;
pub mod client;
pub mod dbt;
pub mod janitor;
pub mod leader;
pub mod leases;
pub mod metrics;
pub mod output;
pub mod quickstart;
pub mod run;
pub mod runtime;
pub mod scheduler;
pub mod store;
