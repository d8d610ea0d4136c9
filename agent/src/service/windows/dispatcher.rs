//! The service process: `run --windows-service` hands the process to the
//! SCM's dispatcher, which calls the service's main on a thread of its own.
//! That main registers a control handler, reports the service running,
//! runs it ([`super::super::run_until_stopped`]) until a stop, shutdown or
//! preshutdown control cancels it, and reports it stopped: with exit code
//! 0, or with [`FAILED_EXIT_CODE`] after an error, which the SCM's
//! recovery actions then retry.
//!
//! Under the SCM stderr goes nowhere, so the error is also saved as the
//! state dir's last error, where `deskpulse-agent status` shows it.
//!
//! No `unsafe`: the entry point the dispatcher calls ignores its raw
//! arguments (the service takes its settings from its config file), so it
//! need not parse them the way `define_windows_service!` does.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{
    self, ServiceControlHandlerResult, ServiceStatusHandle,
};
use windows_service::service_dispatcher;
use windows_sys::Win32::Foundation::ERROR_FAILED_SERVICE_CONTROLLER_CONNECT;

use super::describe;
use crate::config::AgentConfig;
use crate::service::{SERVICE_NAME, ServiceError};
use crate::state::StateDir;

/// The service-specific exit code of a service that stopped on an error.
pub const FAILED_EXIT_CODE: u32 = 1;

/// How long the SCM should wait for a pending start or stop before it
/// calls the service hung: the agent stops within a couple of seconds.
const PENDING_WAIT_HINT: Duration = Duration::from_secs(10);

/// The config `run_as_service` hands to the service's main: the dispatcher
/// calls that main with nothing of ours.
static SERVICE_CONFIG: Mutex<Option<AgentConfig>> = Mutex::new(None);

/// Hands this process to the SCM's dispatcher and runs the service until
/// the SCM stops it. Started any other way, fails with a line that says to
/// use `run`.
pub fn run_as_service(config: AgentConfig) -> Result<(), ServiceError> {
    if let Ok(mut slot) = SERVICE_CONFIG.lock() {
        *slot = Some(config);
    }
    match service_dispatcher::start(SERVICE_NAME, service_main_entry) {
        Ok(()) => Ok(()),
        Err(windows_service::Error::Winapi(e))
            if e.raw_os_error()
                == i32::try_from(ERROR_FAILED_SERVICE_CONTROLLER_CONNECT).ok() =>
        {
            Err(ServiceError::Failed(
                "`run --windows-service` is for the Windows Service Control Manager, which starts the installed service with it; to run the agent in a console, use `deskpulse-agent run`".into(),
            ))
        }
        Err(e) => Err(ServiceError::Failed(format!(
            "cannot connect to the Service Control Manager's dispatcher: {}",
            describe(&e)
        ))),
    }
}

/// What the dispatcher calls, on a thread of its own, once the SCM has
/// started the service. The start arguments (`sc start deskpulse-agent
/// ARGS`) are ignored.
extern "system" fn service_main_entry(_argument_count: u32, _arguments: *mut *mut u16) {
    let config = SERVICE_CONFIG.lock().ok().and_then(|mut slot| slot.take());
    let Some(config) = config else {
        tracing::error!("the service's main was called twice; this process runs one service");
        return;
    };
    if let Err(error) = serve(&config) {
        tracing::error!(
            error = %describe(&error),
            "cannot report the service's state to the Service Control Manager"
        );
    }
}

/// Reports the service's state to the SCM, and no state after `Stopped`:
/// a control arriving as the service ends must not revive it.
struct Reporter {
    handle: ServiceStatusHandle,
    stopped: Mutex<bool>,
}

impl Reporter {
    fn report(
        &self,
        state: ServiceState,
        exit_code: ServiceExitCode,
    ) -> windows_service::Result<()> {
        let mut stopped = self
            .stopped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *stopped {
            return Ok(());
        }
        *stopped = state == ServiceState::Stopped;
        self.handle.set_service_status(status(state, exit_code))
    }
}

/// The status the SCM is told: a running service takes stop and
/// preshutdown controls (the SCM's shutdown control is its alternative to
/// preshutdown, and comes too late for a goodbye to the collector).
fn status(state: ServiceState, exit_code: ServiceExitCode) -> ServiceStatus {
    let (controls_accepted, checkpoint, wait_hint) = match state {
        ServiceState::Running => (
            ServiceControlAccept::STOP | ServiceControlAccept::PRESHUTDOWN,
            0,
            Duration::ZERO,
        ),
        ServiceState::StartPending | ServiceState::StopPending => {
            (ServiceControlAccept::empty(), 1, PENDING_WAIT_HINT)
        }
        _ => (ServiceControlAccept::empty(), 0, Duration::ZERO),
    };
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted,
        exit_code,
        checkpoint,
        wait_hint,
        process_id: None,
    }
}

/// The service from start to stop, as the SCM sees it.
fn serve(config: &AgentConfig) -> windows_service::Result<()> {
    let shutdown = CancellationToken::new();
    // The handler is registered before the handle it reports with exists.
    let reporter: Arc<OnceLock<Reporter>> = Arc::new(OnceLock::new());
    let handler = {
        let shutdown = shutdown.clone();
        let reporter = reporter.clone();
        move |control| match control {
            ServiceControl::Stop | ServiceControl::Preshutdown | ServiceControl::Shutdown => {
                if let Some(reporter) = reporter.get() {
                    let _ = reporter.report(ServiceState::StopPending, ServiceExitCode::NO_ERROR);
                }
                shutdown.cancel();
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        }
    };
    let handle = service_control_handler::register(SERVICE_NAME, handler)?;
    let reporter = reporter.get_or_init(|| Reporter {
        handle,
        stopped: Mutex::new(false),
    });
    reporter.report(ServiceState::StartPending, ServiceExitCode::NO_ERROR)?;

    // Checked before `Running`, so that `service start` sees a service that
    // cannot run (not enrolled, say) stop instead of start.
    let outcome = match StateDir::new(&config.state_dir).usable_credentials() {
        Err(error) => Err(error.to_string()),
        Ok(_) => {
            reporter.report(ServiceState::Running, ServiceExitCode::NO_ERROR)?;
            tracing::info!(state_dir = %config.state_dir.display(), "the agent service is running");
            crate::service::run_until_stopped(config, shutdown, false)
        }
    };
    let exit_code = match &outcome {
        Ok(()) => {
            tracing::info!("the agent service stopped");
            ServiceExitCode::NO_ERROR
        }
        Err(error) => {
            tracing::error!(%error, "the agent service stopped on an error");
            save_last_error(config, error);
            ServiceExitCode::ServiceSpecific(FAILED_EXIT_CODE)
        }
    };
    reporter.report(ServiceState::Stopped, exit_code)
}

/// Saves why the service stopped as the state dir's last error, for
/// `deskpulse-agent status`; not when another agent holds the state dir
/// (its status is its own) or there is no state dir to write.
fn save_last_error(config: &AgentConfig, error: &str) {
    let state = StateDir::new(&config.state_dir);
    if !state.root().is_dir() {
        return;
    }
    let Ok(_lock) = state.lock() else {
        return;
    };
    let mut status = state.status().unwrap_or_default();
    status.connected = false;
    status.last_error = Some(format!("the service stopped: {error}"));
    status.last_error_unix_ms = Some(crate::session::now_ms());
    if let Err(error) = state.save_status(&status) {
        tracing::warn!(%error, "cannot save the service's last error");
    }
}
