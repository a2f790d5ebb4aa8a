//! Ebb's stateless worker.
//!
//! A worker takes tasks from the queue and reports results; it holds no state of
//! its own between tasks. Extraction streams a model's rows into per-bucket chunk
//! files; a shard task diffs one hash range against its previous snapshot, sends
//! the changes under the destination's fleet-wide limits and writes the new
//! snapshot. The coordinator decides what becomes current.

pub mod adaptive;
pub mod behaviour;
pub mod config;
pub mod debugger;
pub mod delivery;
pub mod destinations;
pub mod diff;
pub mod error;
pub mod extract;
pub mod jobs;
pub mod jwt;
pub mod limits;
pub mod mapping;
pub mod metrics;
pub mod partition;
pub mod runtime;
pub mod shard;
pub mod sources;

pub use error::TaskError;
pub use limits::{LeaseGrant, LeaseProvider, LeaseRequest};
pub use runtime::{Worker, WorkerSettings};
