//! The report drop box: where an employee's report waits while the agent
//! service is stopped, when the employee may not open the spool (the key
//! and the spool are the service's alone).
//!
//! A directory in the state dir that every local user may add files to
//! but not delete or rename others' (on Unix mode 1777: the sticky bit),
//! each report a file of its own, readable by its owner and the service
//! only. The reporter is named from the file's owner, which the OS sets
//! and the reporter cannot choose, never from anything in the file. The
//! service drains it at start and every [`DRAIN_INTERVAL`]: each report is
//! spooled, with a fresh health sample and the time it was written, and
//! then deleted. A file that is not a plain, small, valid report (a link,
//! a FIFO, a hard link to another file, garbage) is deleted unread.
//!
//! A user has at most [`MAX_PENDING`] reports waiting; the reporting CLI
//! refuses more with a clear message, and the service's drain keeps the
//! cap too (files written around the CLI past it are deleted) and holds
//! each report to the user's ledger (`super::ledger`), as the live
//! endpoint does: a report over the user's hour waits in the box for a
//! later round, a repeat of one already sent is deleted.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::StateDir;

/// The drop box, inside the state dir.
pub const DIR: &str = "reports";
/// How many reports one user may have waiting.
pub const MAX_PENDING: usize = 5;
/// The largest report file read: a 2,000-character text is at most 8 KB
/// of UTF-8, plus JSON.
pub const MAX_FILE_BYTES: u64 = 16 * 1024;
/// How often the running service looks for reports written while it was
/// stopped (or restarting).
pub const DRAIN_INTERVAL: Duration = Duration::from_secs(30);
/// A half-written report older than this was left by a killed CLI.
const STALE_PARTIAL: Duration = Duration::from_secs(3600);
const SUFFIX: &str = ".report";

/// A report as written to the drop box.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    text: String,
    reported_at_unix_ms: i64,
    /// Made by the reporting CLI; absent in a file an older agent wrote.
    #[serde(default)]
    report_key: Option<String>,
}

/// The drop box of `state`.
pub fn dir(state: &StateDir) -> PathBuf {
    state.root().join(DIR)
}

/// What can stop a report from going into the drop box; one line each.
#[derive(Debug, thiserror::Error)]
pub enum DropError {
    /// The user already has [`MAX_PENDING`] reports waiting.
    #[error(
        "you already have {MAX_PENDING} reports waiting for the agent service, which is not running; they will reach the help desk when it runs again (if it is urgent, call the help desk)"
    )]
    TooMany,
    /// The drop box is missing or is not what the service made.
    #[error("the report drop box {} {why}; ask the help desk to restart the Deskpulse agent service", path.display())]
    Unusable {
        /// The drop box.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Writing the report failed.
    #[error("cannot write the report to {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Creates the drop box if missing and makes it writable by every local
/// user (the service and `enroll` call this; both run privileged).
pub fn prepare(state: &StateDir) -> std::io::Result<PathBuf> {
    let path = dir(state);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} is not a directory",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(&path)?,
        Err(e) => return Err(e),
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o1777))?;
    }
    Ok(path)
}

/// Writes a report for the user running this process. Returns its path.
pub fn drop_report(state: &StateDir, text: &str, now_ms: i64) -> Result<PathBuf, DropError> {
    let dir = dir(state);
    check_dir(&dir, state.root())?;
    let me = platform::current_owner().map_err(|source| DropError::Io {
        path: dir.clone(),
        source,
    })?;
    if own_pending(&dir, &me) >= MAX_PENDING {
        return Err(DropError::TooMany);
    }
    let name = format!("{now_ms}-{:016x}", rand::random::<u64>());
    let partial = dir.join(format!(".{name}.partial"));
    let done = dir.join(format!("{name}{SUFFIX}"));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DropError::Io { path, source }
    };
    let body = serde_json::to_vec(&Written {
        text: text.to_owned(),
        reported_at_unix_ms: now_ms,
        report_key: Some(super::new_report_key()),
    })
    .map_err(|e| DropError::Io {
        path: partial.clone(),
        source: std::io::Error::other(e),
    })?;
    let mut file = platform::create_private(&partial).map_err(io(&partial))?;
    let written = file
        .write_all(&body)
        .and_then(|()| file.sync_all())
        .map_err(io(&partial));
    drop(file);
    if let Err(error) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(error);
    }
    // Renamed only once whole: the service never reads half a report.
    if let Err(source) = std::fs::rename(&partial, &done) {
        let _ = std::fs::remove_file(&partial);
        return Err(DropError::Io { path: done, source });
    }
    Ok(done)
}

fn check_dir(dir: &Path, state_root: &Path) -> Result<(), DropError> {
    let unusable = |why: &str| DropError::Unusable {
        path: dir.to_path_buf(),
        why: why.to_owned(),
    };
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(unusable("does not exist (the service has never run)"));
        }
        Err(e) => return Err(unusable(&format!("cannot be read ({e})"))),
    };
    if !meta.is_dir() {
        return Err(unusable("is not a directory"));
    }
    // Windows: the box inherits the state dir's ACL under %ProgramData%,
    // where users may add files that they then own.
    #[cfg(windows)]
    let _ = state_root;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        // Without the sticky bit another user could delete or replace this
        // user's reports; a box that another user made is theirs to read.
        let service_owner = std::fs::metadata(state_root).map(|m| m.uid()).ok();
        if meta.permissions().mode() & 0o1000 == 0 || Some(meta.uid()) != service_owner {
            return Err(unusable("is not the one the agent service made"));
        }
    }
    Ok(())
}

/// How many waiting reports `owner` has in `dir`.
fn own_pending(dir: &Path, owner: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(SUFFIX))
        .filter(|e| {
            File::open(e.path())
                .ok()
                .and_then(|f| platform::owner(&f).ok())
                .is_some_and(|o| o == owner)
            // Unreadable: not ours (reports are private to their owner).
        })
        .count()
}

/// A report found in the drop box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Its file; delete it once the report is spooled.
    pub path: PathBuf,
    /// Who wrote it, named from the file's owner.
    pub os_user: String,
    /// Its text, checked as the live endpoint checks it.
    pub text: String,
    /// When it was written, never later than now.
    pub reported_at_unix_ms: i64,
    /// Its idempotency key, as the reporting CLI made it.
    pub report_key: String,
}

/// The reports waiting in the drop box, oldest first. What is not a valid
/// report is deleted, with one warning each.
pub fn take_pending(state: &StateDir, system_root: &Path, now_ms: i64) -> Vec<Pending> {
    let dir = dir(state);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            remove_if_stale(&path);
            continue;
        }
        match read_report(&path, system_root, now_ms) {
            Ok(pending) => found.push(pending),
            Err(why) => {
                tracing::warn!(file = %path.display(), why, "deleting an invalid report from the drop box");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    found.sort_by_key(|p| p.reported_at_unix_ms);
    found
}

fn remove_if_stale(path: &Path) {
    let stale = std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|at| at.elapsed().ok())
        .is_some_and(|age| age > STALE_PARTIAL);
    if stale {
        let _ = std::fs::remove_file(path);
    }
}

fn read_report(path: &Path, system_root: &Path, now_ms: i64) -> Result<Pending, String> {
    if !path.to_string_lossy().ends_with(SUFFIX) {
        return Err("not a report file".into());
    }
    let file = platform::open_plain(path).map_err(|e| format!("cannot open it: {e}"))?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a plain file".into());
    }
    platform::check_single_link(&meta)?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("{} bytes, over {MAX_FILE_BYTES}", meta.len()));
    }
    let os_user = platform::owner_name(&file, &meta, system_root)
        .map_err(|e| format!("cannot tell its owner: {e}"))?;
    let mut body = Vec::new();
    file.take(MAX_FILE_BYTES)
        .read_to_end(&mut body)
        .map_err(|e| e.to_string())?;
    let written: Written =
        serde_json::from_slice(&body).map_err(|e| format!("not a report: {e}"))?;
    let text = super::validate_text(&written.text)?;
    // The key is the reporter's to choose, but only for their own reports:
    // the collector scopes keys to the host, so a reused key can only
    // silence a report of the same host, and must be a UUID.
    let report_key = match written.report_key {
        Some(key) => uuid::Uuid::parse_str(&key)
            .map_err(|e| format!("its report key is not a UUID: {e}"))?
            .to_string(),
        None => super::new_report_key(),
    };
    Ok(Pending {
        path: path.to_path_buf(),
        os_user,
        text,
        reported_at_unix_ms: written.reported_at_unix_ms.clamp(0, now_ms),
        report_key,
    })
}

#[cfg(unix)]
mod platform {
    //! Owners are uids; files are opened without following links and
    //! without blocking on a FIFO.

    use std::fs::{File, Metadata, OpenOptions};
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    use std::path::Path;

    pub(super) fn current_owner() -> std::io::Result<String> {
        Ok(rustix::process::geteuid().as_raw().to_string())
    }

    pub(super) fn owner(file: &File) -> std::io::Result<String> {
        Ok(file.metadata()?.uid().to_string())
    }

    pub(super) fn create_private(path: &Path) -> std::io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
    }

    pub(super) fn open_plain(path: &Path) -> std::io::Result<File> {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
    }

    /// A hard link to someone else's file would have the service read
    /// (and delete) what it points at.
    pub(super) fn check_single_link(meta: &Metadata) -> Result<(), String> {
        if meta.nlink() == 1 {
            Ok(())
        } else {
            Err(format!("{} hard links", meta.nlink()))
        }
    }

    pub(super) fn owner_name(
        _file: &File,
        meta: &Metadata,
        system_root: &Path,
    ) -> std::io::Result<String> {
        Ok(super::super::os_user(system_root, meta.uid()))
    }
}

#[cfg(windows)]
mod platform {
    //! Owners are the file's owner SID, named `DOMAIN\user`.

    use std::fs::{File, Metadata, OpenOptions};
    use std::path::Path;

    pub(super) fn current_owner() -> std::io::Result<String> {
        crate::local::current_user()
    }

    pub(super) fn owner(file: &File) -> std::io::Result<String> {
        crate::local::file_owner(file)
    }

    pub(super) fn create_private(path: &Path) -> std::io::Result<File> {
        OpenOptions::new().write(true).create_new(true).open(path)
    }

    pub(super) fn open_plain(path: &Path) -> std::io::Result<File> {
        use std::os::windows::fs::OpenOptionsExt;
        // FILE_FLAG_OPEN_REPARSE_POINT: a link is opened as itself (and
        // then refused as not a plain file), not followed.
        OpenOptions::new()
            .read(true)
            .custom_flags(windows_sys::Win32::Storage::FileSystem::FILE_FLAG_OPEN_REPARSE_POINT)
            .open(path)
    }

    pub(super) fn check_single_link(_meta: &Metadata) -> Result<(), String> {
        Ok(())
    }

    pub(super) fn owner_name(
        file: &File,
        _meta: &Metadata,
        _system_root: &Path,
    ) -> std::io::Result<String> {
        crate::local::file_owner(file)
    }
}

#[cfg(test)]
mod tests;
