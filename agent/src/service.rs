//! The agent as an OS service: `deskpulse-agent service
//! install|uninstall|start|stop|status` and the service body that `run`
//! and the Windows service dispatcher share.
//!
//! One [`Installation`] (binary, config file, state dir) describes what is
//! installed; each OS turns it into its service manager's own form:
//! - Linux: a hardened systemd unit ([`systemd`]);
//! - macOS: a launchd daemon plist ([`launchd`]);
//! - Windows: a Service Control Manager entry (`windows`), whose process
//!   runs `run --windows-service` and answers the SCM's controls.
//!
//! The unit and the plist are generated on every OS, so the Linux build
//! checks them (`systemd-analyze verify`, `plistutil`) and the packages
//! (`cargo xtask dist`) ship exactly what `service install` writes.
//! Installing over an existing service upgrades it in place: the config
//! file and the state dir (enrollment, spool) are kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::issue::{IssueRequest, SharedLedger, dropbox, ledger};
use crate::session::{self, LiveStatus};
use crate::state::StateDir;

pub mod launchd;
pub mod systemd;
#[cfg(windows)]
pub mod windows;

#[cfg(target_os = "macos")]
use launchd as platform;
#[cfg(all(unix, not(target_os = "macos")))]
use systemd as platform;
#[cfg(windows)]
use windows as platform;

/// The service's name for systemd (`deskpulse-agent.service`) and the SCM.
pub const SERVICE_NAME: &str = "deskpulse-agent";
/// The name people see in the Services console and `systemctl status`.
pub const DISPLAY_NAME: &str = "Deskpulse agent";
/// One line on what the service does.
pub const DESCRIPTION: &str =
    "Deskpulse agent: this PC's inventory, health and help-desk diagnostics";

/// How long the stopped service waits for blocking-pool jobs to end.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// What an installed service runs: the binary, the config file it is
/// started with, and the state dir it may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    /// The agent binary, an absolute path.
    pub binary: PathBuf,
    /// The config file passed with `--config`; it need not exist.
    pub config_file: PathBuf,
    /// The state dir the config resolves to; the only place the service
    /// writes besides the temp dirs `clear_temp` empties.
    pub state_dir: PathBuf,
}

impl Installation {
    /// The installation of the running binary with `config_file` and the
    /// state dir that `config` resolved.
    pub fn of_this_binary(
        config_file: PathBuf,
        config: &AgentConfig,
    ) -> Result<Self, ServiceError> {
        let binary = std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .map_err(|e| ServiceError::Failed(format!("cannot find this program's path: {e}")))?;
        Ok(Self {
            binary,
            config_file: absolute(config_file)?,
            state_dir: absolute(config.state_dir.clone())?,
        })
    }
}

fn absolute(path: PathBuf) -> Result<PathBuf, ServiceError> {
    std::path::absolute(&path)
        .map_err(|e| ServiceError::Failed(format!("cannot resolve {}: {e}", path.display())))
}

/// What a service command can fail with; one line each.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The caller lacks the rights; the text says what to run instead.
    #[error("{0}")]
    NotPrivileged(String),
    /// The service is not installed.
    #[error("the {SERVICE_NAME} service is not installed: run `deskpulse-agent service install`")]
    NotInstalled,
    /// `start` on an agent that has not enrolled: systemd skipped it (the
    /// unit's condition), since it would stop at once for want of
    /// credentials.
    #[error(
        "this agent is not enrolled, so the service cannot run: enroll it first (`deskpulse-agent enroll --collector URL --token TOKEN --ca-sha256 PIN`, or `--from-file enroll.toml`), then run `deskpulse-agent service start`"
    )]
    NotEnrolled,
    /// Anything else: the OS call or tool and its error.
    #[error("{0}")]
    Failed(String),
}

/// The service as its manager sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceState {
    /// Whether the manager knows the service.
    pub installed: bool,
    /// Whether it is running now.
    pub running: bool,
    /// The manager's own words, e.g. `active (running)` or `STOPPED`.
    pub detail: String,
    /// Where the service is defined (unit file, plist, SCM entry).
    pub definition: String,
}

/// Installs the service (or upgrades it in place), writes a default config
/// file when there is none, creates the state dir, and starts the service.
/// Returns what was done, for the admin.
pub fn install(installation: &Installation) -> Result<String, ServiceError> {
    platform::install(installation)
}

/// Stops and removes the service; `purge` also deletes the state dir
/// (enrollment, spool) and the config file.
pub fn uninstall(purge: bool, installation: &Installation) -> Result<String, ServiceError> {
    let done = platform::uninstall()?;
    if !purge {
        return Ok(done);
    }
    remove_if_present(&installation.state_dir, true)?;
    remove_if_present(&installation.config_file, false)?;
    Ok(format!(
        "{done}; removed {} and {}",
        installation.state_dir.display(),
        installation.config_file.display()
    ))
}

fn remove_if_present(path: &Path, dir: bool) -> Result<(), ServiceError> {
    let removed = if dir {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ServiceError::Failed(format!(
            "cannot remove {}: {e}",
            path.display()
        ))),
    }
}

/// What `install` says instead of starting an agent that has not enrolled.
pub const NOT_STARTED_UNTIL_ENROLLED: &str = "not started, because this agent is not enrolled yet: run `deskpulse-agent enroll`, then `deskpulse-agent service start`";

/// The enrollment file of `installation` as the unit and the plist name
/// it: joined with `/`, since those are read by Unix service managers,
/// whatever OS prints them.
fn unix_enrollment_file(installation: &Installation) -> String {
    format!(
        "{}/{}",
        installation
            .state_dir
            .display()
            .to_string()
            .trim_end_matches('/'),
        crate::state::ENROLLMENT
    )
}

/// Whether the agent of `installation` has enrolled. Until it has, no
/// service manager starts it: it would stop at once, and systemd or launchd
/// would start it again and again.
pub fn enrolled(installation: &Installation) -> bool {
    StateDir::new(&installation.state_dir)
        .enrollment_file()
        .exists()
}

/// Starts the installed service. Before the agent has enrolled, systemd
/// skips the start ([`ServiceError::NotEnrolled`]) and the Windows service
/// stops at once, with the reason in `status`.
pub fn start() -> Result<String, ServiceError> {
    platform::start()
}

/// Stops the running service.
pub fn stop() -> Result<String, ServiceError> {
    platform::stop()
}

/// The service as its manager sees it.
pub fn query() -> Result<ServiceState, ServiceError> {
    platform::query()
}

/// The config file `service install` writes when none exists: every key
/// commented out but the state dir, so an admin sees what can be set.
pub fn default_config_text(state_dir: &Path) -> String {
    let state_dir = toml::Value::String(state_dir.display().to_string());
    format!(
        "# Deskpulse agent config. Every key but state_dir is optional; see\n\
         # `deskpulse-agent run --help` for what each one does.\n\
         state_dir = {state_dir}\n\
         # inventory_interval = \"6h\"\n\
         # health_interval = \"60s\"\n\
         # log_format = \"text\"\n\
         #\n\
         # [health]\n\
         # watch_services = []\n\
         #\n\
         # [diagnostics]\n\
         # enable = []\n\
         # disable = []\n"
    )
}

/// Writes `text` to `path` unless it exists: an upgrade keeps the admin's
/// config. Returns whether it wrote. Readable by every local user, so an
/// employee's `status` and `report-issue` find the state dir (it holds no
/// secret).
pub fn write_config_if_missing(path: &Path, text: &str) -> Result<bool, ServiceError> {
    if path.exists() {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            ServiceError::Failed(format!("cannot create {}: {e}", parent.display()))
        })?;
    }
    crate::state::write_atomic(path, text.as_bytes(), 0o644)
        .map_err(|e| ServiceError::Failed(e.to_string()))?;
    Ok(true)
}

/// The running service: the local endpoint and the session loop, until
/// `shutdown` is cancelled. `run` and the Windows service both call this.
pub async fn serve(
    config: &AgentConfig,
    state: &StateDir,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let live = Arc::new(Mutex::new(LiveStatus::default()));
    // A few reports at once is plenty; each waits for its spool write.
    let (issues, issue_queue) = tokio::sync::mpsc::channel(8);
    let endpoint = crate::local::Endpoint::of(state);
    let mut local_service =
        crate::local::Service::new(live.clone(), issues.clone(), config.system_root.clone());
    // The per-user ledger survives restarts: it is read from the state dir.
    local_service.ledger = Arc::new(Mutex::new(ledger::Ledger::open(state.root())));
    let (asks, ask_queue) = tokio::sync::mpsc::channel(8);
    local_service.my_tickets = Some(asks);
    local_service.reporter_email_domain = config.reporter_email_domain.clone();
    let employees = crate::issue::tickets::Employees {
        ledger: local_service.ledger.clone(),
        recorded: local_service.tickets_recorded.clone(),
        asks: ask_queue,
        pending: crate::issue::tickets::Pending::default(),
    };
    match dropbox::prepare(state) {
        Ok(_) => {
            tokio::spawn(drain_dropbox(
                state.clone(),
                config.system_root.clone(),
                issues,
                local_service.ledger.clone(),
                config.reporter_email_domain.clone(),
                shutdown.clone(),
            ));
        }
        Err(error) => {
            tracing::warn!(%error, "the report drop box is unavailable; employees who may not open the spool cannot report while the service is stopped");
        }
    }
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            if let Err(error) = crate::local::serve(&endpoint, local_service, shutdown).await {
                tracing::warn!(%error, %endpoint, "the local endpoint is unavailable; `status` will read the saved status");
            }
        }
    });
    session::run_service(config, state, live, issue_queue, employees, shutdown)
        .await
        .map_err(|e| e.to_string())
}

/// Spools the reports employees left in the drop box while the service
/// was stopped, at start and every [`dropbox::DRAIN_INTERVAL`], through
/// the same queue as live reports (so each gets a fresh health sample).
/// A file is deleted once its report is durable in the spool.
async fn drain_dropbox(
    state: StateDir,
    system_root: PathBuf,
    issues: mpsc::Sender<IssueRequest>,
    ledger: SharedLedger,
    email_domain: Option<String>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(dropbox::DRAIN_INTERVAL);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let found = tokio::task::spawn_blocking({
            let state = state.clone();
            let system_root = system_root.clone();
            move || dropbox::take_pending(&state, &system_root, session::now_ms())
        })
        .await
        .unwrap_or_default();
        // The CLI keeps each user to dropbox::MAX_PENDING waiting reports;
        // files written past it by hand are deleted here, oldest kept.
        let mut waiting: std::collections::HashMap<String, usize> = Default::default();
        let mut limited: std::collections::HashSet<String> = Default::default();
        for pending in found {
            let seen = waiting.entry(pending.os_user.clone()).or_default();
            *seen += 1;
            if *seen > dropbox::MAX_PENDING {
                tracing::warn!(user = %pending.os_user, file = %pending.path.display(), "deleting a drop box report past the user's {} waiting (written around the CLI)", dropbox::MAX_PENDING);
                remove_drained(&pending.path);
                continue;
            }
            if limited.contains(&pending.os_user) {
                continue;
            }
            let now = session::now_ms();
            let admitted = crate::issue::lock(&ledger).admit(
                &pending.os_user,
                &pending.text,
                &pending.report_key,
                now,
            );
            let reference = match admitted {
                ledger::Admission::Admitted { reference } => reference,
                ledger::Admission::AlreadySent { reference, .. } => {
                    tracing::info!(user = %pending.os_user, reference, "a drop box report repeats one already sent; not sent again");
                    remove_drained(&pending.path);
                    continue;
                }
                // Never dropped: it waits in the drop box until the user's
                // window has room.
                ledger::Admission::Limited(_) => {
                    tracing::info!(user = %pending.os_user, "drop box reports wait: the user used up the reports of this hour");
                    limited.insert(pending.os_user);
                    continue;
                }
            };
            let (reply, answer) = tokio::sync::oneshot::channel();
            let request = IssueRequest {
                text: pending.text,
                os_user: pending.os_user.clone(),
                reported_at_unix_ms: Some(pending.reported_at_unix_ms),
                report_key: reference.clone(),
                reporter_email: crate::issue::reporter_email(
                    None,
                    &pending.os_user,
                    email_domain.as_deref(),
                )
                .ok()
                .flatten(),
                reply,
            };
            if issues.send(request).await.is_err() {
                crate::issue::lock(&ledger).withdraw(&pending.os_user, &reference);
                return;
            }
            match answer.await {
                Ok(Ok(_)) => remove_drained(&pending.path),
                // Not spooled (a full disk, a stopping service): the file
                // stays for the next round.
                Ok(Err(_)) | Err(_) => {
                    crate::issue::lock(&ledger).withdraw(&pending.os_user, &reference);
                    break;
                }
            }
        }
    }
}

fn remove_drained(path: &Path) {
    if let Err(error) = std::fs::remove_file(path) {
        tracing::warn!(%error, file = %path.display(), "cannot delete a drained report; it will be sent again");
    }
}

/// Runs the service on a fresh runtime until `shutdown` is cancelled (or,
/// with `on_signals`, until Ctrl-C or SIGTERM): takes the state dir lock,
/// checks the enrollment, serves, and gives blocking-pool jobs
/// [`SHUTDOWN_GRACE`] to end.
pub fn run_until_stopped(
    config: &AgentConfig,
    shutdown: CancellationToken,
    on_signals: bool,
) -> Result<(), String> {
    let state = StateDir::new(&config.state_dir);
    // Whatever the service manager set: every file the service makes from
    // here on (spool, inventory base, diagnostics journal) is its alone.
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let _lock = state.lock().map_err(|e| e.to_string())?;
    state.make_private().map_err(|e| e.to_string())?;
    state.usable_credentials().map_err(|e| e.to_string())?;
    let rt = runtime()?;
    let served = rt.block_on(async {
        if on_signals {
            tokio::spawn(cancel_on_signal(shutdown.clone()));
        }
        serve(config, &state, shutdown).await
    });
    // Dropping the runtime would wait for every blocking-pool job: a
    // collection stuck in a probe would hold the exit until the probe's
    // deadline, or for ever where a call has none. A diagnostic told to
    // stop kills its processes within milliseconds, so a second is enough.
    rt.shutdown_timeout(SHUTDOWN_GRACE);
    served
}

/// Installs the stop signals' handlers at once, so that a SIGTERM from
/// the service's first moment on is a clean stop (a handler installed by a
/// spawned task would wait for the task's first poll, and until then the
/// signal's default ends the process), and returns the wait for one.
#[cfg(unix)]
fn cancel_on_signal(shutdown: CancellationToken) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let stop_signals = signal(SignalKind::terminate())
        .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)))
        .ok();
    async move {
        match stop_signals {
            Some((mut term, mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        shutdown.cancel();
    }
}

/// Waits for Ctrl-C (the Windows service stops through the SCM instead).
#[cfg(not(unix))]
async fn cancel_on_signal(shutdown: CancellationToken) {
    let _ = tokio::signal::ctrl_c().await;
    shutdown.cancel();
}

/// The agent's runtime: one thread, because its work is small and a
/// single-threaded runtime keeps its memory and idle CPU near zero.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// Fails unless this process may manage services: root on Unix. (Windows
/// asks the SCM, which answers "access denied" itself.)
#[cfg(unix)]
pub(crate) fn require_root(action: &str) -> Result<(), ServiceError> {
    if rustix::process::geteuid().is_root() {
        return Ok(());
    }
    Err(ServiceError::NotPrivileged(format!(
        "`service {action}` needs root: run `sudo deskpulse-agent service {action}`"
    )))
}

/// Runs a service manager's command line tool; its stderr's first line is
/// the error.
#[cfg(unix)]
pub(crate) fn tool(program: &str, args: &[&str]) -> Result<std::process::Output, ServiceError> {
    std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| ServiceError::Failed(format!("cannot run {program}: {e}")))
}

/// Runs `program args`, failing with its first stderr line unless it exits 0.
#[cfg(unix)]
pub(crate) fn tool_ok(program: &str, args: &[&str]) -> Result<(), ServiceError> {
    let output = tool(program, args)?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(ServiceError::Failed(format!(
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        output.status,
        stderr.lines().next().unwrap_or("no message").trim()
    )))
}

#[cfg(test)]
mod tests;
