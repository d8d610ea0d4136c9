//! The launchd daemon of the agent on macOS: its plist and its management
//! through `launchctl`.
//!
//! The plist starts the binary directly (`ProgramArguments`, an array: no
//! shell), at boot (`RunAtLoad`) and again whenever it exits while the
//! agent is enrolled (`KeepAlive` on the enrollment file's `PathState`), at
//! background priority with low-priority I/O.

use std::path::{Path, PathBuf};

use plist::{Dictionary, Value};

use super::{Installation, ServiceError};

/// The daemon's label, and the plist's file name without `.plist`.
pub const LABEL: &str = "com.deskpulse.agent";
/// Where launchd reads system daemons from.
pub const DAEMON_DIR: &str = "/Library/LaunchDaemons";
/// Where the daemon's stderr goes; launchd has no journal for it.
pub const LOG_FILE: &str = "/Library/Logs/Deskpulse/agent.log";
/// launchd waits this long before starting a daemon that exited again.
const THROTTLE_SECS: i64 = 10;

/// The plist's path.
pub fn plist_path() -> PathBuf {
    Path::new(DAEMON_DIR).join(format!("{LABEL}.plist"))
}

/// The daemon plist for `installation`, as XML.
pub fn plist_xml(installation: &Installation) -> Result<Vec<u8>, ServiceError> {
    let arguments = [
        installation.binary.display().to_string(),
        "run".to_owned(),
        "--config".to_owned(),
        installation.config_file.display().to_string(),
    ]
    .into_iter()
    .map(Value::String)
    .collect();
    let mut daemon = Dictionary::new();
    daemon.insert("Label".into(), Value::String(LABEL.into()));
    daemon.insert("ProgramArguments".into(), Value::Array(arguments));
    daemon.insert("RunAtLoad".into(), Value::Boolean(true));
    // Kept alive while the enrollment exists: an unenrolled agent would
    // only fail every ThrottleInterval, and launchd starts it on its own
    // once `deskpulse-agent enroll` writes the file.
    let enrollment = super::unix_enrollment_file(installation);
    let mut path_state = Dictionary::new();
    path_state.insert(enrollment, Value::Boolean(true));
    let mut keep_alive = Dictionary::new();
    keep_alive.insert("PathState".into(), Value::Dictionary(path_state));
    daemon.insert("KeepAlive".into(), Value::Dictionary(keep_alive));
    daemon.insert(
        "ThrottleInterval".into(),
        Value::Integer(THROTTLE_SECS.into()),
    );
    daemon.insert("ProcessType".into(), Value::String("Background".into()));
    daemon.insert("LowPriorityIO".into(), Value::Boolean(true));
    daemon.insert("Umask".into(), Value::Integer(0o077.into()));
    daemon.insert("StandardErrorPath".into(), Value::String(LOG_FILE.into()));
    let mut xml = Vec::new();
    Value::Dictionary(daemon)
        .to_writer_xml(&mut xml)
        .map_err(|e| ServiceError::Failed(format!("cannot write the launchd plist: {e}")))?;
    xml.push(b'\n');
    Ok(xml)
}

/// Writes the plist, the config (when missing) and the state dir under
/// `root` (`/` for real; a temp dir in tests). Returns the plist's path.
pub fn write_files(installation: &Installation, root: &Path) -> Result<PathBuf, ServiceError> {
    let under = |path: &Path| root.join(path.strip_prefix("/").unwrap_or(path));
    let path = under(&plist_path());
    for dir in [path.parent(), under(Path::new(LOG_FILE)).parent()]
        .into_iter()
        .flatten()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| ServiceError::Failed(format!("cannot create {}: {e}", dir.display())))?;
    }
    crate::state::write_atomic(&path, &plist_xml(installation)?, 0o644)
        .map_err(|e| ServiceError::Failed(e.to_string()))?;
    super::write_config_if_missing(
        &under(&installation.config_file),
        &super::default_config_text(&installation.state_dir),
    )?;
    crate::state::StateDir::new(under(&installation.state_dir))
        .create()
        .map_err(|e| ServiceError::Failed(e.to_string()))?;
    Ok(path)
}

#[cfg(target_os = "macos")]
pub(super) use manage::{install, query, start, stop, uninstall};

#[cfg(target_os = "macos")]
mod manage {
    //! `launchctl` for the running system.

    use std::path::Path;

    use super::super::{Installation, ServiceError, ServiceState, require_root, tool, tool_ok};
    use super::{LABEL, plist_path, write_files};

    fn target() -> String {
        format!("system/{LABEL}")
    }

    fn loaded() -> Result<bool, ServiceError> {
        Ok(tool("launchctl", &["print", &target()])?.status.success())
    }

    pub(in super::super) fn install(installation: &Installation) -> Result<String, ServiceError> {
        require_root("install")?;
        // An upgrade: unload the old definition first, so the new plist
        // and binary are what launchd starts.
        if loaded()? {
            tool_ok("launchctl", &["bootout", &target()])?;
        }
        let path = write_files(installation, Path::new("/"))?;
        let path_text = path.display().to_string();
        tool_ok("launchctl", &["bootstrap", "system", &path_text])?;
        Ok(format!("installed and started {LABEL} ({path_text})"))
    }

    pub(in super::super) fn uninstall() -> Result<String, ServiceError> {
        require_root("uninstall")?;
        let path = plist_path();
        if !path.exists() {
            return Err(ServiceError::NotInstalled);
        }
        if loaded()? {
            tool_ok("launchctl", &["bootout", &target()])?;
        }
        std::fs::remove_file(&path)
            .map_err(|e| ServiceError::Failed(format!("cannot remove {}: {e}", path.display())))?;
        Ok(format!("stopped and removed {LABEL}"))
    }

    pub(in super::super) fn start() -> Result<String, ServiceError> {
        require_root("start")?;
        let path = plist_path();
        if !path.exists() {
            return Err(ServiceError::NotInstalled);
        }
        if !loaded()? {
            tool_ok(
                "launchctl",
                &["bootstrap", "system", &path.display().to_string()],
            )?;
        } else {
            tool_ok("launchctl", &["kickstart", &target()])?;
        }
        Ok(format!("started {LABEL}"))
    }

    /// Unloads the daemon: with `KeepAlive`, killing it would only have
    /// launchd start it again. It loads again at the next boot.
    pub(in super::super) fn stop() -> Result<String, ServiceError> {
        require_root("stop")?;
        if loaded()? {
            tool_ok("launchctl", &["bootout", &target()])?;
        }
        Ok(format!(
            "stopped {LABEL} (it starts again at the next boot)"
        ))
    }

    pub(in super::super) fn query() -> Result<ServiceState, ServiceError> {
        let output = tool("launchctl", &["print", &target()])?;
        let text = String::from_utf8_lossy(&output.stdout);
        let state = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("state = "))
            .unwrap_or(if output.status.success() {
                "loaded"
            } else {
                "not loaded"
            })
            .to_owned();
        Ok(ServiceState {
            installed: plist_path().exists(),
            running: state == "running",
            detail: state,
            definition: plist_path().display().to_string(),
        })
    }
}
