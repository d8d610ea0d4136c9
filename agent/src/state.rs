//! The agent's state dir: its private key and certificates, its enrollment,
//! the last known status, and the lock that keeps one agent process per
//! state dir (D12). Every file is replaced atomically, so a crash never
//! leaves a half-written key or enrollment.
//!
//! Everything in it is the service's alone: files 0600, directories 0700
//! (on Windows a protected DACL for SYSTEM and Administrators). The one
//! exception is the local endpoint: the socket (0666) and the report drop
//! box (1777), which the state dir itself (0711) lets users reach by name
//! without listing or reading anything else. [`StateDir::make_private`]
//! brings an existing install to these modes at every start.

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
/// The state dir's own mode on Unix: searchable by all, listable by none.
#[cfg(unix)]
const ROOT_MODE: u32 = 0o711;
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
    /// The key, certificate or CA on disk cannot be used to connect.
    #[error(
        "{} {reason}; the agent cannot connect with it: enroll again (`deskpulse-agent enroll --force`)",
        path.display()
    )]
    BadCredential {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
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

    /// Creates the dir if missing, mode 0711: employees may pass through
    /// it to the local socket and the drop box by name, but not list it or
    /// read anything else in it.
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
            fs::set_permissions(&self.root, fs::Permissions::from_mode(ROOT_MODE))
                .map_err(io("cannot set permissions on", &self.root))?;
        }
        Ok(())
    }

    /// Makes everything in the state dir the service's alone, as an
    /// install of an older agent (files 0644 in 0755 directories) may have
    /// left it: the dir 0711, every directory under it 0700, every file
    /// 0600, all owned by this process's user when it runs as root. The
    /// socket and the drop box (with the employees' reports in it) keep
    /// their own modes; symbolic links are left alone, never followed.
    pub fn make_private(&self) -> Result<(), StateError> {
        self.create()?;
        private::apply(&self.root)
    }

    /// Takes the exclusive lock without waiting; [`StateError::Busy`] when a
    /// running agent holds it.
    pub fn lock(&self) -> Result<StateLock, StateError> {
        self.create()?;
        let path = self.root.join(LOCK);
        let mut options = OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path).map_err(io("cannot open", &path))?;
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
        write_atomic(&self.root.join(CERT), creds.cert_pem.as_bytes(), 0o600)?;
        write_atomic(&self.root.join(CA), creds.ca_pem.as_bytes(), 0o600)?;
        let text = toml::to_string(&creds.enrollment).map_err(|e| StateError::Corrupt {
            path: self.root.join(ENROLLMENT),
            reason: e.to_string(),
        })?;
        write_atomic(&self.root.join(ENROLLMENT), text.as_bytes(), 0o600)
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

    /// Replaces the CA bundle alone (the collector's, sent at each
    /// session's start during a CA rotation, see `renew::adopt_bundle`).
    pub fn replace_ca(&self, ca_pem: &str) -> Result<(), StateError> {
        write_atomic(&self.root.join(CA), ca_pem.as_bytes(), 0o600)
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

    /// [`Self::credentials`], checked as the TLS handshake would use them:
    /// the certificate and the CA parse, the key is one the TLS library can
    /// sign with, and it is the key the certificate was issued for. A
    /// damaged file is then one line naming it at start, not a connection
    /// error retried for ever.
    pub fn usable_credentials(&self) -> Result<Credentials, StateError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let creds = self.credentials()?;
        let bad = |name: &str, reason: String| StateError::BadCredential {
            path: self.root.join(name),
            reason,
        };
        let certificates = |name: &str, pem: &str| {
            let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(name, format!("is not a PEM certificate ({e})")))?;
            if certs.is_empty() {
                return Err(bad(name, "holds no PEM certificate".into()));
            }
            for cert in &certs {
                <x509_cert::Certificate as x509_cert::der::Decode>::from_der(cert).map_err(
                    |e| {
                        bad(
                            name,
                            format!("holds a certificate that does not parse ({e})"),
                        )
                    },
                )?;
            }
            Ok(certs)
        };
        certificates(CA, &creds.ca_pem)?;
        let chain = certificates(CERT, &creds.cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(creds.key_pem.as_bytes())
            .map_err(|e| bad(KEY, format!("is not a PEM private key ({e})")))?;
        let provider = rustls::crypto::ring::default_provider();
        match rustls::sign::CertifiedKey::from_der(chain, key, &provider) {
            Ok(_) => Ok(creds),
            Err(rustls::Error::InconsistentKeys(_)) => {
                Err(bad(CERT, format!("was not issued for the key in {KEY}")))
            }
            Err(e) => Err(bad(KEY, format!("cannot be used ({e})"))),
        }
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
        write_atomic(&self.root.join(STATUS), &text, 0o600)
    }
}

#[cfg(unix)]
mod private {
    //! The Unix modes and owner of [`StateDir::make_private`].

    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    use super::{ROOT_MODE, SOCKET, StateError, io};

    pub(super) fn apply(root: &Path) -> Result<(), StateError> {
        let me = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        set(root, ROOT_MODE, me)?;
        for entry in fs::read_dir(root).map_err(io("cannot list", root))? {
            let entry = entry.map_err(io("cannot list", root))?;
            let name = entry.file_name();
            // The endpoint: `dropbox::prepare` and the socket's bind set
            // their modes, and the reports in the box belong to their
            // authors.
            if name == SOCKET || name == crate::issue::dropbox::DIR {
                continue;
            }
            tighten(&entry.path(), me)?;
        }
        Ok(())
    }

    fn tighten(path: &Path, me: (u32, u32)) -> Result<(), StateError> {
        let meta = fs::symlink_metadata(path).map_err(io("cannot inspect", path))?;
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        if meta.is_dir() {
            set(path, 0o700, me)?;
            for entry in fs::read_dir(path).map_err(io("cannot list", path))? {
                tighten(&entry.map_err(io("cannot list", path))?.path(), me)?;
            }
            Ok(())
        } else {
            set(path, 0o600, me)
        }
    }

    fn set(path: &Path, mode: u32, (uid, gid): (u32, u32)) -> Result<(), StateError> {
        let meta = fs::symlink_metadata(path).map_err(io("cannot inspect", path))?;
        // Only root may give a file away; any other service user owns what
        // it made.
        if uid == 0 && (meta.uid() != uid || meta.gid() != gid) {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))
                .map_err(io("cannot change the owner of", path))?;
        }
        if meta.permissions().mode() & 0o7777 != mode {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(io("cannot set permissions on", path))?;
        }
        Ok(())
    }
}

#[cfg(windows)]
mod private {
    //! On Windows the state dir's DACL does what the Unix modes do: see
    //! `local::protect_state_dir`.

    use std::path::Path;

    use super::StateError;

    pub(super) fn apply(root: &Path) -> Result<(), StateError> {
        crate::local::protect_state_dir(root).map_err(|source| StateError::Io {
            what: "cannot restrict access to",
            path: root.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests;
