//! The agent as a Windows service, through the Service Control Manager
//! (the `windows-service` crate): `service install|uninstall|start|stop|
//! status`, and the dispatcher that `run --windows-service` hands the
//! process to ([`dispatcher`]).
//!
//! The service runs in its own process as LocalSystem, starts at boot, and
//! is started with `run --windows-service --config "<config file>"`, the
//! same command line the MSI's `ServiceInstall` registers. The SCM
//! restarts it after a failure (recovery actions), including an exit with
//! an error code, and gives it time to say goodbye to the collector before
//! the machine shuts down (preshutdown).
//!
//! Each command waits for the state it asked for, at most
//! [`STATE_CHANGE_TIMEOUT`], and says plainly when it does not come.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use windows_service::service::{
    Service, ServiceAccess, ServiceAction, ServiceActionType, ServiceErrorControl, ServiceExitCode,
    ServiceFailureActions, ServiceFailureResetPeriod, ServiceInfo, ServiceStartType,
    ServiceState as ScState, ServiceStatus, ServiceType,
};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_CALL_NOT_IMPLEMENTED, ERROR_INVALID_LEVEL, ERROR_NOT_SUPPORTED,
    ERROR_SERVICE_ALREADY_RUNNING, ERROR_SERVICE_DOES_NOT_EXIST, ERROR_SERVICE_MARKED_FOR_DELETE,
    ERROR_SERVICE_NEVER_STARTED, ERROR_SERVICE_NOT_ACTIVE,
};

use super::{DESCRIPTION, DISPLAY_NAME, Installation, SERVICE_NAME, ServiceError, ServiceState};
use crate::state::StateDir;

mod dispatcher;

pub use dispatcher::run_as_service;

/// The longest a command waits for the service to start or stop. The agent
/// stops within a couple of seconds (its goodbye, then
/// its shutdown grace); a slow disk or Wine may take longer to start
/// a process.
pub const STATE_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long Windows waits for the service to stop before it shuts down:
/// enough for the goodbye to the collector, short enough not to hold up
/// the employee's shutdown.
pub const PRESHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// The SCM restarts a failed service after these delays (first, second,
/// and every later failure), and forgets the failures after
/// [`FAILURE_RESET_PERIOD`] without one.
pub const RESTART_DELAYS: [Duration; 3] = [
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(300),
];
/// A day without a failure resets the SCM's failure count.
pub const FAILURE_RESET_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);

/// How often a command polls the service's state while it waits.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The arguments the SCM starts the binary with (after its path).
pub fn launch_arguments(config_file: &Path) -> Vec<OsString> {
    vec![
        "run".into(),
        "--windows-service".into(),
        "--config".into(),
        config_file.as_os_str().to_owned(),
    ]
}

/// The SCM's entry for `installation`.
fn service_info(installation: &Installation) -> ServiceInfo {
    ServiceInfo {
        name: SERVICE_NAME.into(),
        display_name: DISPLAY_NAME.into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: without_verbatim_prefix(&installation.binary),
        launch_arguments: launch_arguments(&without_verbatim_prefix(&installation.config_file)),
        dependencies: vec![],
        // LocalSystem: the inventory reads WMI and HKLM, and diagnostics
        // may restart services.
        account_name: None,
        account_password: None,
    }
}

/// `path` without the `\\?\` that `canonicalize` puts before it: the SCM
/// passes the command line to `CreateProcess`, and admins read it in the
/// Services console.
fn without_verbatim_prefix(path: &Path) -> PathBuf {
    let text = path.as_os_str().to_string_lossy();
    if let Some(share) = text.strip_prefix(r"\\?\UNC\") {
        return PathBuf::from(format!(r"\\{share}"));
    }
    match text.strip_prefix(r"\\?\") {
        Some(plain) if plain.as_bytes().get(1) == Some(&b':') => PathBuf::from(plain),
        _ => path.to_path_buf(),
    }
}

/// The Win32 error code inside a `windows-service` error.
fn error_code(error: &windows_service::Error) -> Option<u32> {
    match error {
        windows_service::Error::Winapi(io) => io.raw_os_error().and_then(|c| u32::try_from(c).ok()),
        _ => None,
    }
}

/// The OS's own words for a `windows-service` error (the crate's Display
/// says only "IO error in winapi call").
fn describe(error: &windows_service::Error) -> String {
    match error {
        windows_service::Error::Winapi(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// One line for a failed SCM call made by `service <action>` while
/// `doing` something.
fn scm_failure(action: &str, doing: &str, error: &windows_service::Error) -> ServiceError {
    match error_code(error) {
        Some(ERROR_ACCESS_DENIED) => ServiceError::NotPrivileged(format!(
            "`service {action}` needs an elevated prompt: run `deskpulse-agent service {action}` from an Administrator command prompt"
        )),
        Some(ERROR_SERVICE_DOES_NOT_EXIST) => ServiceError::NotInstalled,
        Some(ERROR_SERVICE_MARKED_FOR_DELETE) => ServiceError::Failed(format!(
            "the {SERVICE_NAME} service is marked for deletion and goes once every program holding it lets go: close the Services console (services.msc), or restart Windows, then run `deskpulse-agent service {action}` again"
        )),
        _ => ServiceError::Failed(format!("cannot {doing}: {}", describe(error))),
    }
}

fn connect(action: &str, access: ServiceManagerAccess) -> Result<ServiceManager, ServiceError> {
    ServiceManager::local_computer(None::<&str>, access)
        .map_err(|e| scm_failure(action, "connect to the Service Control Manager", &e))
}

fn open(action: &str, access: ServiceAccess) -> Result<Service, ServiceError> {
    connect(action, ServiceManagerAccess::CONNECT)?
        .open_service(SERVICE_NAME, access)
        .map_err(|e| scm_failure(action, &format!("open the {SERVICE_NAME} service"), &e))
}

fn status_of(action: &str, service: &Service) -> Result<ServiceStatus, ServiceError> {
    service.query_status().map_err(|e| {
        scm_failure(
            action,
            &format!("query the {SERVICE_NAME} service's state"),
            &e,
        )
    })
}

/// The SCM's name for a state, as `sc query` prints it.
fn state_name(state: ScState) -> &'static str {
    match state {
        ScState::Stopped => "STOPPED",
        ScState::StartPending => "START_PENDING",
        ScState::StopPending => "STOP_PENDING",
        ScState::Running => "RUNNING",
        ScState::ContinuePending => "CONTINUE_PENDING",
        ScState::PausePending => "PAUSE_PENDING",
        ScState::Paused => "PAUSED",
    }
}

/// A status in a few words: its state, the process while running, the
/// exit code after a failure.
fn describe_status(status: &ServiceStatus) -> String {
    let state = state_name(status.current_state);
    match (status.current_state, status.process_id, status.exit_code) {
        (ScState::Running, Some(pid), _) => format!("{state}, pid {pid}"),
        (_, _, ServiceExitCode::ServiceSpecific(code)) => {
            format!("{state}, failed with service error {code}")
        }
        // 1077 only says the service has not run since the machine started.
        (_, _, ServiceExitCode::Win32(code))
            if code != 0 && code != ERROR_SERVICE_NEVER_STARTED =>
        {
            format!(
                "{state}, failed: {}",
                std::io::Error::from_raw_os_error(i32::try_from(code).unwrap_or(i32::MAX))
            )
        }
        _ => state.to_owned(),
    }
}

/// Polls until the service is in `wanted` or [`STATE_CHANGE_TIMEOUT`]
/// passes; returns the last status either way, and whether it got there.
fn wait_for_state(
    action: &str,
    service: &Service,
    wanted: ScState,
) -> Result<(ServiceStatus, bool), ServiceError> {
    let deadline = Instant::now() + STATE_CHANGE_TIMEOUT;
    loop {
        let status = status_of(action, service)?;
        if status.current_state == wanted {
            return Ok((status, true));
        }
        // A service that stopped while starting will not start by waiting.
        if wanted == ScState::Running && status.current_state == ScState::Stopped {
            return Ok((status, false));
        }
        if Instant::now() >= deadline {
            return Ok((status, false));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Starts the service and waits until it runs.
fn start_and_wait(action: &str, service: &Service) -> Result<ServiceStatus, ServiceError> {
    match service.start(&[] as &[&str]) {
        Ok(()) => {}
        Err(e) if error_code(&e) == Some(ERROR_SERVICE_ALREADY_RUNNING) => {}
        Err(e) => {
            return Err(scm_failure(
                action,
                &format!("start the {SERVICE_NAME} service"),
                &e,
            ));
        }
    }
    let (status, running) = wait_for_state(action, service, ScState::Running)?;
    if running {
        return Ok(status);
    }
    if status.current_state == ScState::Stopped {
        return Err(ServiceError::Failed(format!(
            "the {SERVICE_NAME} service stopped as it started ({}); `deskpulse-agent status` shows its last error",
            describe_status(&status)
        )));
    }
    Err(ServiceError::Failed(format!(
        "the {SERVICE_NAME} service did not start within {}s (it is {}); `sc query {SERVICE_NAME}` shows whether it gets there",
        STATE_CHANGE_TIMEOUT.as_secs(),
        describe_status(&status)
    )))
}

/// Asks the service to stop, unless it is stopped, and waits until it is.
/// Returns whether it was running.
fn stop_and_wait(action: &str, service: &Service) -> Result<bool, ServiceError> {
    if status_of(action, service)?.current_state == ScState::Stopped {
        return Ok(false);
    }
    match service.stop() {
        Ok(_) => {}
        Err(e) if error_code(&e) == Some(ERROR_SERVICE_NOT_ACTIVE) => {}
        Err(e) => {
            return Err(scm_failure(
                action,
                &format!("stop the {SERVICE_NAME} service"),
                &e,
            ));
        }
    }
    let (status, stopped) = wait_for_state(action, service, ScState::Stopped)?;
    if stopped {
        return Ok(true);
    }
    Err(ServiceError::Failed(format!(
        "the {SERVICE_NAME} service did not stop within {}s (it is {}); `taskkill /f /pid <pid>` ends it, with the pid from `sc queryex {SERVICE_NAME}`",
        STATE_CHANGE_TIMEOUT.as_secs(),
        describe_status(&status)
    )))
}

/// Whether an SCM error says this Windows (or Wine) lacks a setting, which
/// the optional settings then go without.
fn unsupported(error: &windows_service::Error) -> bool {
    matches!(
        error_code(error),
        Some(ERROR_INVALID_LEVEL | ERROR_CALL_NOT_IMPLEMENTED | ERROR_NOT_SUPPORTED)
    )
}

/// The description, the recovery actions and the preshutdown timeout.
/// Returns the settings this SCM does not support (Wine lacks some).
fn configure(service: &Service) -> Result<Vec<&'static str>, ServiceError> {
    let actions = RESTART_DELAYS
        .iter()
        .map(|&delay| ServiceAction {
            action_type: ServiceActionType::Restart,
            delay,
        })
        .collect();
    let settings: [(&'static str, windows_service::Result<()>); 4] = [
        ("the description", service.set_description(DESCRIPTION)),
        (
            "recovery actions",
            service.update_failure_actions(ServiceFailureActions {
                reset_period: ServiceFailureResetPeriod::After(FAILURE_RESET_PERIOD),
                reboot_msg: None,
                command: None,
                actions: Some(actions),
            }),
        ),
        // An exit with an error code counts as a failure too, not only a
        // crash: a service that cannot reach its state dir is retried.
        (
            "recovery after an error exit",
            service.set_failure_actions_on_non_crash_failures(true),
        ),
        (
            "a preshutdown timeout",
            service.set_preshutdown_timeout(PRESHUTDOWN_TIMEOUT),
        ),
    ];
    let mut missing = Vec::new();
    for (setting, outcome) in settings {
        match outcome {
            Ok(()) => {}
            Err(e) if unsupported(&e) => missing.push(setting),
            Err(e) => {
                return Err(scm_failure(
                    "install",
                    &format!("set {setting} of the {SERVICE_NAME} service"),
                    &e,
                ));
            }
        }
    }
    Ok(missing)
}

pub(super) fn install(installation: &Installation) -> Result<String, ServiceError> {
    // The SCM first: without elevation this is where it says so, before
    // anything is written.
    let manager = connect(
        "install",
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )?;
    let wrote_config = super::write_config_if_missing(
        &installation.config_file,
        &super::default_config_text(&installation.state_dir),
    )?;
    let state = StateDir::new(&installation.state_dir);
    state
        .create()
        .map_err(|e| ServiceError::Failed(e.to_string()))?;
    let info = service_info(installation);
    let access = ServiceAccess::QUERY_STATUS
        | ServiceAccess::START
        | ServiceAccess::STOP
        | ServiceAccess::CHANGE_CONFIG
        | ServiceAccess::QUERY_CONFIG;
    let (service, upgraded) = match manager.open_service(SERVICE_NAME, access) {
        Ok(service) => {
            // The old binary may be running: stop it, so that the start
            // below runs what is registered now.
            stop_and_wait("install", &service)?;
            service.change_config(&info).map_err(|e| {
                scm_failure("install", &format!("update the {SERVICE_NAME} service"), &e)
            })?;
            (service, true)
        }
        Err(e) if error_code(&e) == Some(ERROR_SERVICE_DOES_NOT_EXIST) => {
            let service = manager.create_service(&info, access).map_err(|e| {
                scm_failure(
                    "install",
                    &format!("register the {SERVICE_NAME} service"),
                    &e,
                )
            })?;
            (service, false)
        }
        Err(e) => {
            return Err(scm_failure(
                "install",
                &format!("open the {SERVICE_NAME} service"),
                &e,
            ));
        }
    };
    let missing = configure(&service)?;

    let mut done = if upgraded {
        format!(
            "upgraded the {SERVICE_NAME} service in place (kept {} and {})",
            installation.config_file.display(),
            installation.state_dir.display()
        )
    } else {
        format!("installed the {SERVICE_NAME} service")
    };
    if wrote_config {
        done.push_str(&format!(
            "; wrote a default config to {}",
            installation.config_file.display()
        ));
    }
    if !missing.is_empty() {
        done.push_str(&format!(
            "; this Service Control Manager does not support {}",
            missing.join(", ")
        ));
    }
    // Started only once enrolled: until then the service would stop at
    // once for want of credentials.
    if !super::enrolled(installation) {
        done.push_str("; ");
        done.push_str(super::NOT_STARTED_UNTIL_ENROLLED);
        return Ok(done);
    }
    let status = start_and_wait("install", &service)?;
    done.push_str(&format!("; started it ({})", describe_status(&status)));
    Ok(done)
}

pub(super) fn uninstall() -> Result<String, ServiceError> {
    let service = open(
        "uninstall",
        ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
    )?;
    let was_running = stop_and_wait("uninstall", &service)?;
    service.delete().map_err(|e| {
        scm_failure(
            "uninstall",
            &format!("delete the {SERVICE_NAME} service"),
            &e,
        )
    })?;
    // The entry goes once the last handle to it is closed, ours included.
    drop(service);
    let stopped = if was_running {
        "stopped and removed"
    } else {
        "removed"
    };
    let deadline = Instant::now() + STATE_CHANGE_TIMEOUT;
    loop {
        match query()? {
            ServiceState {
                installed: false, ..
            } => return Ok(format!("{stopped} the {SERVICE_NAME} service")),
            _ if Instant::now() >= deadline => {
                return Ok(format!(
                    "{stopped} the {SERVICE_NAME} service; it is marked for deletion and goes once every program holding it (such as the Services console) lets go, or at the next restart"
                ));
            }
            _ => std::thread::sleep(POLL_INTERVAL),
        }
    }
}

pub(super) fn start() -> Result<String, ServiceError> {
    let service = open("start", ServiceAccess::QUERY_STATUS | ServiceAccess::START)?;
    if status_of("start", &service)?.current_state == ScState::Running {
        return Ok(format!("the {SERVICE_NAME} service is already running"));
    }
    let status = start_and_wait("start", &service)?;
    Ok(format!(
        "started the {SERVICE_NAME} service ({})",
        describe_status(&status)
    ))
}

pub(super) fn stop() -> Result<String, ServiceError> {
    let service = open("stop", ServiceAccess::QUERY_STATUS | ServiceAccess::STOP)?;
    if stop_and_wait("stop", &service)? {
        Ok(format!("stopped the {SERVICE_NAME} service"))
    } else {
        Ok(format!("the {SERVICE_NAME} service was not running"))
    }
}

pub(super) fn query() -> Result<ServiceState, ServiceError> {
    let manager = connect("status", ServiceManagerAccess::CONNECT)?;
    let service = match manager.open_service(
        SERVICE_NAME,
        ServiceAccess::QUERY_STATUS | ServiceAccess::QUERY_CONFIG,
    ) {
        Ok(service) => service,
        Err(e) if error_code(&e) == Some(ERROR_SERVICE_DOES_NOT_EXIST) => {
            return Ok(ServiceState {
                installed: false,
                running: false,
                detail: "not registered with the Service Control Manager".into(),
                definition: String::new(),
            });
        }
        Err(e) => {
            return Err(scm_failure(
                "status",
                &format!("open the {SERVICE_NAME} service"),
                &e,
            ));
        }
    };
    let status = status_of("status", &service)?;
    // The command line, when the SCM gives it: it says which binary and
    // config file the service runs with.
    let definition = match service.query_config() {
        Ok(config) => format!(
            "SCM service {SERVICE_NAME}: {}",
            config.executable_path.display()
        ),
        Err(_) => format!("SCM service {SERVICE_NAME}"),
    };
    Ok(ServiceState {
        installed: true,
        running: status.current_state == ScState::Running,
        detail: describe_status(&status),
        definition,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verbatim_prefix_goes_from_drive_and_share_paths() {
        assert_eq!(
            without_verbatim_prefix(Path::new(r"\\?\C:\Program Files\Deskpulse\agent.exe")),
            PathBuf::from(r"C:\Program Files\Deskpulse\agent.exe")
        );
        assert_eq!(
            without_verbatim_prefix(Path::new(r"\\?\UNC\server\share\agent.exe")),
            PathBuf::from(r"\\server\share\agent.exe")
        );
        assert_eq!(
            without_verbatim_prefix(Path::new(r"C:\Deskpulse\agent.exe")),
            PathBuf::from(r"C:\Deskpulse\agent.exe")
        );
        // A device path has no plain form; it is kept.
        assert_eq!(
            without_verbatim_prefix(Path::new(r"\\?\Volume{1234}\agent.exe")),
            PathBuf::from(r"\\?\Volume{1234}\agent.exe")
        );
    }

    #[test]
    fn the_service_runs_run_windows_service_with_its_config() {
        let installation = Installation {
            binary: PathBuf::from(r"\\?\C:\Program Files\Deskpulse\deskpulse-agent.exe"),
            config_file: PathBuf::from(r"C:\ProgramData\Deskpulse\agent.toml"),
            state_dir: PathBuf::from(r"C:\ProgramData\Deskpulse\agent"),
        };
        let info = service_info(&installation);
        assert_eq!(
            info.executable_path,
            PathBuf::from(r"C:\Program Files\Deskpulse\deskpulse-agent.exe")
        );
        assert_eq!(
            info.launch_arguments,
            [
                "run",
                "--windows-service",
                "--config",
                r"C:\ProgramData\Deskpulse\agent.toml"
            ]
            .map(OsString::from)
        );
        assert_eq!(info.start_type, ServiceStartType::AutoStart);
        assert_eq!(info.account_name, None, "LocalSystem");
    }

    #[test]
    fn a_status_says_its_state_its_process_and_its_failure() {
        let status = |current_state, exit_code, process_id| ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state,
            controls_accepted: windows_service::service::ServiceControlAccept::empty(),
            exit_code,
            checkpoint: 0,
            wait_hint: Duration::ZERO,
            process_id,
        };
        assert_eq!(
            describe_status(&status(
                ScState::Running,
                ServiceExitCode::NO_ERROR,
                Some(42)
            )),
            "RUNNING, pid 42"
        );
        assert_eq!(
            describe_status(&status(ScState::Stopped, ServiceExitCode::NO_ERROR, None)),
            "STOPPED"
        );
        assert_eq!(
            describe_status(&status(
                ScState::Stopped,
                ServiceExitCode::ServiceSpecific(1),
                None
            )),
            "STOPPED, failed with service error 1"
        );
        assert_eq!(
            describe_status(&status(
                ScState::Stopped,
                ServiceExitCode::Win32(ERROR_SERVICE_NEVER_STARTED),
                None
            )),
            "STOPPED"
        );
    }
}
