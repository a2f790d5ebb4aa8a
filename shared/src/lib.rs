//! Types and mechanisms shared by Ebb's coordinator and workers.
//!
//! Nothing here knows about the coordinator or the worker: this crate holds the
//! vocabulary (config, values, hashes, snapshots, wire messages) and the traits
//! behind which the two scales of Ebb differ (queue, object store).

pub mod allocator;
pub mod config;
pub mod hashing;
pub mod protocol;
pub mod queue;
pub mod redact;
pub mod snapshot;
pub mod storage;
pub mod telemetry;
pub mod value;

pub use hashing::{HashRange, KeyHash};
pub use value::Value;
