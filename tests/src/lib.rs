//! Helpers of the end-to-end tests: real services, a local HTTP destination and
//! real `ebb` processes.

pub mod embedded;
pub mod fakesnow;
pub mod fleet;
pub mod gcs;
pub mod memory;
pub mod model;
pub mod process;
pub mod proxy;
pub mod s3;
pub mod scenario;
pub mod services;
pub mod sink;
pub mod source_contract;
pub mod venv;
