//! Runs: the state machine, the shard planner and the coordinator that drives
//! them (dispatching tasks, accepting results, committing snapshots).

pub mod coordinator;
pub mod planner;
pub mod requests;
pub mod rows;
pub mod state;

pub use coordinator::{Coordinator, TriggerError, TriggerOptions};
pub use state::{RunEvent, RunStatus};
