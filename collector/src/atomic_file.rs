//! Files replaced whole (temp file, fsync, rename) with a given mode, so a
//! crash never leaves a half-written secret. It depends on nothing of the
//! collector's: the data dir and the audit key both write through it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A failed write: what was being done, to which path, and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct WriteError {
    /// What was being done.
    pub what: &'static str,
    /// The path concerned.
    pub path: PathBuf,
    /// The OS error.
    pub source: std::io::Error,
}

/// Writes `contents` to `path` atomically with `mode`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), WriteError> {
    let failed = |what: &'static str, at: &Path| {
        let path = at.to_path_buf();
        move |source| WriteError { what, path, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(failed("cannot write into", dir))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(failed("cannot set permissions on", path))?;
    tmp.write_all(contents)
        .map_err(failed("cannot write", path))?;
    tmp.as_file()
        .sync_all()
        .map_err(failed("cannot sync", path))?;
    tmp.persist(path)
        .map_err(|e| failed("cannot replace", path)(e.error))?;
    Ok(())
}
