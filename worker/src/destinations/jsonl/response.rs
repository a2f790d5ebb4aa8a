use crate::destinations::DeliveryError;
use std::path::Path;

/// A full disk or a missing permission will not fix itself within a run.
pub(super) fn io_error(path: &Path, error: std::io::Error) -> DeliveryError {
    let message = format!("{}: {error}", path.display());
    match error.kind() {
        std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock => DeliveryError::Transient(message),
        _ => DeliveryError::Permanent(message),
    }
}
