//! The agent as a Windows service, through the Service Control Manager
//! (the `windows-service` crate). To be built (issue 18): install,
//! uninstall, start, stop, query, and the dispatcher that `run
//! --windows-service` hands the process to.

use super::{Installation, ServiceError, ServiceState};

fn not_yet() -> ServiceError {
    ServiceError::Failed("the Windows service is not built yet".into())
}

pub(super) fn install(_installation: &Installation) -> Result<String, ServiceError> {
    Err(not_yet())
}

pub(super) fn uninstall() -> Result<String, ServiceError> {
    Err(not_yet())
}

pub(super) fn start() -> Result<String, ServiceError> {
    Err(not_yet())
}

pub(super) fn stop() -> Result<String, ServiceError> {
    Err(not_yet())
}

pub(super) fn query() -> Result<ServiceState, ServiceError> {
    Err(not_yet())
}

/// Hands this process to the SCM's dispatcher and runs the service until
/// the SCM stops it.
pub fn run_as_service(_config: crate::config::AgentConfig) -> Result<(), ServiceError> {
    Err(not_yet())
}
