//! The agent's state dir: its private key and certificates, its enrollment,
//! the last known status, and the lock that keeps one agent process per
//! state dir (D12). Every file is replaced atomically, so a crash never
//! leaves a half-written key or enrollment.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const KEY: &str = "agent.key";
const CERT: &str = "agent.pem";
const CA: &str = "ca.pem";
/// The enrollment file's name in the state dir: its presence means
/// "enrolled".
pub const ENROLLMENT: &str = "enrollment.toml";
const STATUS: &str = "status.json";
const LOCK: &str = "agent.lock";
/// The local socket `status` and `report-issue` talk to (D12).
pub const SOCKET: &str = "agent.sock";

/// What can go wrong with the state dir.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The agent has not enrolled.
    #[error(
        "this agent is not enrolled (no {} found): run `deskpulse-agent enroll` first",
        path.display()
    )]
    NotEnrolled {
        /// The enrollment file that is missing.
        path: PathBuf,
    },
    /// A state file does not parse.
    #[error("{} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Another agent process holds the lock.
    #[error(
        "another deskpulse-agent is running with state dir {}; stop it first, or ask it with `deskpulse-agent status`",
        dir.display()
    )]
    Busy {
        /// The state dir.
        dir: PathBuf,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The agent's enrollment, as stored in `enrollment.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// The collector's URL, `https://HOST:PORT`.
    pub collector: String,
    /// The host id the collector issued.
    pub host_id: String,
    /// When it enrolled, ms since the Unix epoch.
    pub enrolled_at_unix_ms: i64,
}

/// The credentials an enrolled agent connects with.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The enrollment.
    pub enrollment: Enrollment,
    /// The host certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM.
    pub key_pem: String,
    /// The CA bundle to trust, PEM.
    pub ca_pem: String,
}

/// The last known status, kept in `status.json` so `status` can answer
/// while the service is not running.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// True while a service holds a stream to the collector.
    #[serde(default)]
    pub connected: bool,
    /// When a report was last acknowledged, ms since the Unix epoch.
    #[serde(default)]
    pub last_success_unix_ms: Option<i64>,
    /// The last error, one line.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When that error happened, ms since the Unix epoch.
    #[serde(default)]
    pub last_error_unix_ms: Option<i64>,
    /// Reports collected but not yet acknowledged.
    #[serde(default)]
    pub unacknowledged: u64,
    /// The spool's depth per class and its drop counts.
    #[serde(default)]
    pub spool: crate::spool::SpoolStats,
}

/// The state dir.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// Holds the state dir's exclusive lock while alive.
#[derive(Debug)]
pub struct StateLock(File);

impl Drop for StateLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Writes `contents` to `path` atomically with the given Unix mode.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io("cannot write into", dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io("cannot set permissions on", path))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.write_all(contents).map_err(io("cannot write", path))?;
    tmp.as_file().sync_all().map_err(io("cannot sync", path))?;
    tmp.persist(path).map_err(|e| StateError::Io {
        what: "cannot replace",
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

fn read_optional(path: &Path) -> Result<Option<String>, StateError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("cannot read", path)(e)),
    }
}

impl StateDir {
    /// The state dir at `root` (not created yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Its path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the durable spool lives.
    pub fn spool_dir(&self) -> PathBuf {
        self.root.join("spool")
    }

    /// Where the inventory delta base lives.
    pub fn inventory_dir(&self) -> PathBuf {
        self.root.join("inventory")
    }

    /// The local socket's path.
    pub fn socket_path(&self) -> PathBuf {
        self.root.join(SOCKET)
    }

    /// Creates the dir if missing. It is world-readable so employees can
    /// reach the local socket; the key inside is 0600.
    pub fn create(&self) -> Result<(), StateError> {
        if self.root.is_dir() {
            return Ok(());
        }
        fs::create_dir_all(&self.root).map_err(io("cannot create state dir", &self.root))?;
        // Explicitly, not through the umask: the service's unit sets a
        // strict one (0077), which would lock employees out of the socket
        // and the report drop box.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&self.root, fs::Permissions::from_mode(0o755))
                .map_err(io("cannot set permissions on", &self.root))?;
        }
        Ok(())
    }

    /// Takes the exclusive lock without waiting; [`StateError::Busy`] when a
    /// running agent holds it.
    pub fn lock(&self) -> Result<StateLock, StateError> {
        self.create()?;
        let path = self.root.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("cannot open", &path))?;
        match file.try_lock() {
            Ok(()) => Ok(StateLock(file)),
            Err(fs::TryLockError::WouldBlock) => Err(StateError::Busy {
                dir: self.root.clone(),
            }),
            Err(fs::TryLockError::Error(e)) => Err(io("cannot lock", &path)(e)),
        }
    }

    /// The file whose presence means "enrolled": the service managers
    /// start the agent only once it exists (see `service`).
    pub fn enrollment_file(&self) -> PathBuf {
        self.root.join(ENROLLMENT)
    }

    /// Stores a new enrollment. The enrollment file goes last: until it is
    /// written, the agent is not enrolled, whatever else is on disk.
    pub fn save_enrollment(&self, creds: &Credentials) -> Result<(), StateError> {
        self.create()?;
        write_atomic(&self.root.join(KEY), creds.key_pem.as_bytes(), 0o600)?;
        write_atomic(&self.root.join(CERT), creds.cert_pem.as_bytes(), 0o644)?;
        write_atomic(&self.root.join(CA), creds.ca_pem.as_bytes(), 0o644)?;
        let text = toml::to_string(&creds.enrollment).map_err(|e| StateError::Corrupt {
            path: self.root.join(ENROLLMENT),
            reason: e.to_string(),
        })?;
        write_atomic(&self.root.join(ENROLLMENT), text.as_bytes(), 0o644)
    }

    /// Replaces the host certificate, its key and the CA bundle (a
    /// confirmed renewal, see `renew`), key first: the caller repeats it
    /// after a crash from the renewed pair it still holds.
    pub fn replace_certificate(
        &self,
        cert_pem: &str,
        key_pem: &str,
        ca_pem: &str,
    ) -> Result<(), StateError> {
        write_atomic(&self.root.join(KEY), key_pem.as_bytes(), 0o600)?;
        write_atomic(&self.root.join(CERT), cert_pem.as_bytes(), 0o644)?;
        write_atomic(&self.root.join(CA), ca_pem.as_bytes(), 0o644)
    }

    /// The enrollment, if any.
    pub fn enrollment(&self) -> Result<Option<Enrollment>, StateError> {
        let path = self.root.join(ENROLLMENT);
        let Some(text) = read_optional(&path)? else {
            return Ok(None);
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path,
                reason: e.message().to_owned(),
            })
    }

    /// Everything needed to connect; [`StateError::NotEnrolled`] when the
    /// agent has not enrolled.
    pub fn credentials(&self) -> Result<Credentials, StateError> {
        let enrollment = self.enrollment()?.ok_or_else(|| StateError::NotEnrolled {
            path: self.root.join(ENROLLMENT),
        })?;
        let read = |name: &str| {
            let path = self.root.join(name);
            read_optional(&path)?.ok_or_else(|| StateError::Corrupt {
                path,
                reason: "missing; enroll again".into(),
            })
        };
        Ok(Credentials {
            enrollment,
            cert_pem: read(CERT)?,
            key_pem: read(KEY)?,
            ca_pem: read(CA)?,
        })
    }

    /// The last saved status (default when none was saved).
    pub fn status(&self) -> Result<Status, StateError> {
        let path = self.root.join(STATUS);
        match read_optional(&path)? {
            Some(text) => serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
                path,
                reason: e.to_string(),
            }),
            None => Ok(Status::default()),
        }
    }

    /// Saves the status.
    pub fn save_status(&self, status: &Status) -> Result<(), StateError> {
        let text = serde_json::to_vec_pretty(status).map_err(|e| StateError::Corrupt {
            path: self.root.join(STATUS),
            reason: e.to_string(),
        })?;
        write_atomic(&self.root.join(STATUS), &text, 0o644)
    }
}

#[cfg(test)]
mod tests;
