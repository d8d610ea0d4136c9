//! The systemd unit of the agent and its management through `systemctl`.
//!
//! The unit is hardened: the filesystem is read-only to the service but
//! for its state dir and the temp dirs `clear_temp` may empty; no new
//! privileges; kernel tunables, modules and control groups protected; and
//! a memory and CPU ceiling drawn from the agent's budget (a few MiB
//! resident, near-zero idle CPU), with room for the diagnostics' child
//! processes, which share the service's cgroup.

use std::fmt::Write as _;
use std::path::Path;

use super::{DESCRIPTION, Installation, SERVICE_NAME};

/// Where `service install` writes the unit: the admin's directory, which
/// overrides a unit a package put under `/usr/lib/systemd/system`.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// Above this the kernel reclaims the service's memory hard; a full
/// inventory peaks near 10 MiB, a diagnostic's child a few MiB more.
pub const MEMORY_HIGH: &str = "64M";
/// The service is killed (and restarted) above this: a leak, not work.
pub const MEMORY_MAX: &str = "128M";
/// A quarter of one core: inventories and diagnostics are short bursts,
/// and an employee's PC must not feel them.
pub const CPU_QUOTA: &str = "25%";

/// The unit file's name.
pub fn unit_name() -> String {
    format!("{SERVICE_NAME}.service")
}

/// The unit file for `installation`.
pub fn unit_file(installation: &Installation) -> String {
    let mut unit = String::new();
    let exec = [
        quote(&installation.binary),
        "run".to_owned(),
        "--config".to_owned(),
        quote(&installation.config_file),
    ]
    .join(" ");
    let _ = write!(
        unit,
        "[Unit]\n\
         Description={DESCRIPTION}\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         # Not started (at boot either) until the agent has enrolled: it\n\
         # would only fail every RestartSec.\n\
         ConditionPathExists={enrollment}\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exec}\n\
         Restart=on-failure\n\
         RestartSec=10s\n\
         # The agent writes only its state dir, and the temp dirs that the\n\
         # clear_temp diagnostic (off by default) may empty.\n\
         ProtectSystem=strict\n\
         ReadWritePaths={state} -/tmp -/var/tmp\n\
         ProtectHome=read-only\n\
         NoNewPrivileges=yes\n\
         ProtectKernelTunables=yes\n\
         ProtectKernelModules=yes\n\
         ProtectControlGroups=yes\n\
         RestrictSUIDSGID=yes\n\
         RestrictRealtime=yes\n\
         LockPersonality=yes\n\
         MemoryDenyWriteExecute=yes\n\
         UMask=0077\n\
         MemoryHigh={MEMORY_HIGH}\n\
         MemoryMax={MEMORY_MAX}\n\
         CPUQuota={CPU_QUOTA}\n\
         TasksMax=64\n\
         Nice=10\n\
         IOSchedulingClass=idle\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        state = quote(&installation.state_dir),
        enrollment = super::unix_enrollment_file(installation).replace('%', "%%"),
    );
    unit
}

/// A path as one systemd word: quoted when it holds a space, with `\`,
/// `"` and `%` (specifier) escaped.
fn quote(path: &Path) -> String {
    let text = path.display().to_string();
    let escaped = text
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%");
    if escaped.contains(char::is_whitespace) {
        format!("\"{escaped}\"")
    } else {
        escaped
    }
}

/// Writes the unit, the config (when missing) and the state dir under
/// `root` (`/` for real; a temp dir in tests). Returns the unit's path.
pub fn write_files(
    installation: &Installation,
    root: &Path,
) -> Result<std::path::PathBuf, super::ServiceError> {
    let under = |path: &Path| root.join(path.strip_prefix("/").unwrap_or(path));
    let unit_path = under(Path::new(UNIT_DIR)).join(unit_name());
    let failed = |what: &Path, e: std::io::Error| {
        super::ServiceError::Failed(format!("cannot write {}: {e}", what.display()))
    };
    if let Some(dir) = unit_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
    }
    crate::state::write_atomic(&unit_path, unit_file(installation).as_bytes(), 0o644)
        .map_err(|e| super::ServiceError::Failed(e.to_string()))?;
    super::write_config_if_missing(
        &under(&installation.config_file),
        &super::default_config_text(&installation.state_dir),
    )?;
    let state = under(&installation.state_dir);
    crate::state::StateDir::new(&state)
        .create()
        .map_err(|e| super::ServiceError::Failed(e.to_string()))?;
    Ok(unit_path)
}

#[cfg(all(unix, not(target_os = "macos")))]
pub(super) use manage::{install, query, start, stop, uninstall};

#[cfg(all(unix, not(target_os = "macos")))]
mod manage {
    //! `systemctl` for the running system.

    use std::path::Path;

    use super::super::{Installation, ServiceError, ServiceState, require_root, tool, tool_ok};
    use super::{UNIT_DIR, unit_name, write_files};

    /// systemd creates this directory when it is the init system.
    fn systemd_running() -> bool {
        Path::new("/run/systemd/system").is_dir()
    }

    fn no_systemd() -> ServiceError {
        ServiceError::Failed(
            "systemd is not running on this machine (no /run/systemd/system); run the agent with `deskpulse-agent run` under the init system it has".into(),
        )
    }

    pub(in super::super) fn install(installation: &Installation) -> Result<String, ServiceError> {
        require_root("install")?;
        let unit = write_files(installation, Path::new("/"))?;
        if !systemd_running() {
            return Ok(format!(
                "wrote {}; systemd is not running here, so nothing was started",
                unit.display()
            ));
        }
        tool_ok("systemctl", &["daemon-reload"])?;
        tool_ok("systemctl", &["enable", &unit_name()])?;
        if !super::super::enrolled(installation) {
            return Ok(format!(
                "installed and enabled {} ({}); {}",
                unit_name(),
                unit.display(),
                super::super::NOT_STARTED_UNTIL_ENROLLED
            ));
        }
        // restart, not start: an upgrade must run the new binary.
        tool_ok("systemctl", &["restart", &unit_name()])?;
        Ok(format!(
            "installed and started {} ({})",
            unit_name(),
            unit.display()
        ))
    }

    pub(in super::super) fn uninstall() -> Result<String, ServiceError> {
        require_root("uninstall")?;
        let unit = Path::new(UNIT_DIR).join(unit_name());
        if !unit.exists() {
            return Err(ServiceError::NotInstalled);
        }
        if systemd_running() {
            tool_ok("systemctl", &["disable", "--now", &unit_name()])?;
        }
        std::fs::remove_file(&unit)
            .map_err(|e| ServiceError::Failed(format!("cannot remove {}: {e}", unit.display())))?;
        if !systemd_running() {
            return Ok(format!("removed {}", unit.display()));
        }
        tool_ok("systemctl", &["daemon-reload"])?;
        Ok(format!("stopped and removed {}", unit_name()))
    }

    pub(in super::super) fn start() -> Result<String, ServiceError> {
        require_root("start")?;
        if !systemd_running() {
            return Err(no_systemd());
        }
        tool_ok("systemctl", &["start", &unit_name()])?;
        // A failed condition is no error to systemctl: the start is skipped.
        let condition = tool(
            "systemctl",
            &["show", &unit_name(), "--property=ConditionResult"],
        )?;
        if String::from_utf8_lossy(&condition.stdout).trim() == "ConditionResult=no" {
            return Err(ServiceError::NotEnrolled);
        }
        Ok(format!("started {}", unit_name()))
    }

    pub(in super::super) fn stop() -> Result<String, ServiceError> {
        require_root("stop")?;
        if !systemd_running() {
            return Err(no_systemd());
        }
        tool_ok("systemctl", &["stop", &unit_name()])?;
        Ok(format!("stopped {}", unit_name()))
    }

    pub(in super::super) fn query() -> Result<ServiceState, ServiceError> {
        let name = unit_name();
        if !systemd_running() {
            // The admin's unit first, then the one a package installed.
            let unit = [UNIT_DIR, "/usr/lib/systemd/system", "/lib/systemd/system"]
                .iter()
                .map(|dir| Path::new(dir).join(&name))
                .find(|unit| unit.exists())
                .unwrap_or_else(|| Path::new(UNIT_DIR).join(&name));
            return Ok(ServiceState {
                installed: unit.exists(),
                running: false,
                detail: "systemd is not running on this machine".into(),
                definition: unit.display().to_string(),
            });
        }
        let output = tool(
            "systemctl",
            &[
                "show",
                &name,
                "--property=LoadState,ActiveState,SubState,FragmentPath",
            ],
        )?;
        let text = String::from_utf8_lossy(&output.stdout);
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or("")
                .to_owned()
        };
        let active = field("ActiveState");
        Ok(ServiceState {
            installed: field("LoadState") == "loaded",
            running: active == "active",
            detail: format!("{active} ({})", field("SubState")),
            definition: field("FragmentPath"),
        })
    }
}
