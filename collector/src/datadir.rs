//! The collector's data dir (D6): the CA, the server certificate, the
//! initial admin token, the audit key and anchor file (D28) and the
//! embedded database. Whichever command comes
//! first, `serve` or an admin command, initialises it, idempotently and under
//! an exclusive lock, so two commands started together never make two CAs.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::atomic_file::{WriteError, write_atomic};
use crate::clock::Clock;
use crate::config::StoreConfig;
use crate::pki::{self, CertificateAuthority, KeyAndCert, PkiError};
use crate::secrets;
use crate::store::{self, AuditEntry, NewApiToken, Role, SharedStore, StoreError};

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server.key";
const LOCK: &str = ".init.lock";
const REPLICA_ID: &str = "replica-id";
/// The file holding the first admin's API token (mode 0600, never printed).
pub const INITIAL_ADMIN_TOKEN: &str = "initial-admin-token";
/// The technician the initial admin token belongs to.
pub const INITIAL_ADMIN_NAME: &str = "admin";
/// Names always in the server certificate.
pub const DEFAULT_SERVER_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];
/// A server certificate closer than this to expiry is reissued at start.
const SERVER_CERT_RENEW_BEFORE_SECS: i64 = 30 * 24 * 3600;

/// What can go wrong with the data dir.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A certificate or key failed.
    #[error("{0}")]
    Pki(#[from] PkiError),
    /// The audit key could not be loaded or made.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The data dir holds a fleet but the database holds none (issue 20).
    #[error(
        "the data dir {} holds a fleet (its CA and audit anchors) but the database {database} \
         holds none: the database was lost or replaced (a deleted deskpulse.db?); restore the \
         latest backup with `deskpulse-collector restore --from FILE` (README, \"Backup and \
         restore\"), or start a new fleet on this CA with `serve --init`",
        dir.display()
    )]
    StoreLost {
        /// The data dir.
        dir: PathBuf,
        /// The database URL.
        database: String,
    },
    /// The database's audit chain ends before the data dir's anchors.
    #[error(
        "the database {database} ends its audit chain at seq {head}, but {} anchors seq \
         {anchored}: the database lost writes it had committed (a lost deskpulse.db-wal, or an \
         older copy); restore the latest backup with `deskpulse-collector restore --from FILE` \
         (README, \"Backup and restore\")",
        anchors.display()
    )]
    StoreBehindAnchors {
        /// The database URL.
        database: String,
        /// The store's audit chain head.
        head: i64,
        /// The anchor file.
        anchors: PathBuf,
        /// The newest anchored seq.
        anchored: i64,
    },
    /// `restore` was asked of a PostgreSQL store.
    #[error(
        "restore puts back the embedded SQLite database; a PostgreSQL store is restored from its \
         pg_dump with pg_restore (README, \"Backup and restore\")"
    )]
    NotEmbedded,
    /// The file given to `restore` is no Deskpulse backup.
    #[error("{} is not a Deskpulse backup: {reason}", from.display())]
    NotABackup {
        /// The file.
        from: PathBuf,
        /// Why.
        reason: String,
    },
    /// This replica's CA is not the fleet's (D2).
    #[error(
        "the CA in {dir} (sha256 {local}) is not the fleet CA recorded in the database \
         (sha256 {stored}); give this replica the fleet CA with `deskpulse-collector ca import`"
    )]
    CaMismatch {
        /// The data dir.
        dir: PathBuf,
        /// This data dir's CA fingerprint.
        local: String,
        /// The store's.
        stored: String,
    },
}

impl DataDirError {
    /// True for errors that are configuration problems (exit code 2).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            DataDirError::CaMismatch { .. } | DataDirError::NotEmbedded
        )
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DataDirError + 'a {
    move |source| DataDirError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// An initialised data dir with its open store.
pub struct DataDir {
    root: PathBuf,
    /// The open store.
    pub store: SharedStore,
    /// The fleet CAs: the active one issues, the old one (during a
    /// rotation) signs the server certificate.
    pub ca: rotation::CaSet,
    /// This replica's stable id, kept in the data dir so a restart can clear
    /// the stream markers its previous run left.
    pub replica_id: String,
    /// The audit key and anchor file (D28).
    pub audit: std::sync::Arc<crate::audit::AuditAnchor>,
}

impl std::fmt::Debug for DataDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataDir")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl From<WriteError> for DataDirError {
    fn from(e: WriteError) -> Self {
        DataDirError::Io {
            what: e.what,
            path: e.path,
            source: e.source,
        }
    }
}

fn read(path: &Path) -> Result<Option<String>, DataDirError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("cannot read", path)(e)),
    }
}

/// Holds the init lock until dropped.
struct InitLock(File);

impl InitLock {
    fn take(root: &Path) -> Result<Self, DataDirError> {
        let path = root.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("cannot open", &path))?;
        file.lock().map_err(io("cannot lock", &path))?;
        Ok(Self(file))
    }
}

impl Drop for InitLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl DataDir {
    /// Opens the data dir, creating and initialising whatever is missing:
    /// the dir itself (0700), the CA, the store, and on a fresh store the
    /// initial admin token. A data dir that already holds a fleet (its CA)
    /// is refused when the database is new or older than its audit anchors
    /// (see [`DataDir::open_with`]).
    pub async fn open(config: &StoreConfig, clock: &dyn Clock) -> Result<Self, DataDirError> {
        Self::open_with(config, clock, false).await
    }

    /// [`DataDir::open`], where `new_fleet` (`serve --init`) says that a
    /// new, empty database beside an existing CA is intended: the anchors
    /// of the old chain are set aside and a new initial admin token made.
    /// A brand-new data dir (no CA yet) needs no `new_fleet`.
    pub async fn open_with(
        config: &StoreConfig,
        clock: &dyn Clock,
        new_fleet: bool,
    ) -> Result<Self, DataDirError> {
        Self::open_checked(config, clock, new_fleet, true).await
    }

    /// [`DataDir::open`] for `audit verify`, which names what is wrong with
    /// a chain that ends before its anchors rather than refusing it.
    pub async fn open_to_verify(
        config: &StoreConfig,
        clock: &dyn Clock,
    ) -> Result<Self, DataDirError> {
        Self::open_checked(config, clock, false, false).await
    }

    async fn open_checked(
        config: &StoreConfig,
        clock: &dyn Clock,
        new_fleet: bool,
        check_anchors: bool,
    ) -> Result<Self, DataDirError> {
        let root = config.data_dir.clone();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(io("cannot create data dir", &root))?;
        let _lock = InitLock::take(&root)?;

        let held_a_fleet = root
            .join(CA_CERT)
            .try_exists()
            .map_err(io("cannot read", &root.join(CA_CERT)))?;
        load_or_create_ca(&root)?;
        // Under the same lock as the CA: one key per data dir, ever.
        let audit = std::sync::Arc::new(crate::audit::AuditAnchor::load_or_create(&root)?);
        let replica_path = root.join(REPLICA_ID);
        let replica_id = match read(&replica_path)? {
            Some(id) if !id.trim().is_empty() => id.trim().to_owned(),
            _ => {
                let id = uuid::Uuid::new_v4().to_string();
                write_atomic(&replica_path, id.as_bytes(), 0o644)?;
                id
            }
        };
        let store = store::backend::open(&config.database_url).await?;
        if held_a_fleet && !store.has_technicians().await? {
            if !new_fleet {
                return Err(DataDirError::StoreLost {
                    dir: root,
                    database: config.database_url.clone(),
                });
            }
            if let Some((aside, count)) =
                audit.set_aside_anchors_past(None, "before-init", clock.now_ms())?
            {
                tracing::warn!(anchors = count, aside = %aside.display(), "--init: a new fleet begins; the old chain's anchors were set aside");
            }
        }
        if let Some(anchored) = audit.newest_anchored_seq()?.filter(|_| check_anchors) {
            let head = store.audit_head().await?.seq;
            if anchored > head {
                return Err(DataDirError::StoreBehindAnchors {
                    database: config.database_url.clone(),
                    head,
                    anchors: audit.log_path().to_path_buf(),
                    anchored,
                });
            }
        }
        // The store's CAs first: a replica another one rotated takes the
        // new active CA here (docs/ca-rotation.md).
        // D2 is checked there: the data dir's CA must be one the store
        // holds as active or old.
        let ca = ca_set_locked(&root, store.as_ref()).await?;
        if !store.has_technicians().await? {
            let token = secrets::new_token(secrets::API_TOKEN_PREFIX);
            // The file first: if the store write fails, the next start finds
            // no technician and makes a new token, overwriting this one.
            write_atomic(
                &root.join(INITIAL_ADMIN_TOKEN),
                format!("{token}\n").as_bytes(),
                0o600,
            )?;
            let token_id = uuid::Uuid::new_v4().to_string();
            store
                .create_api_token(
                    &NewApiToken {
                        technician_name: INITIAL_ADMIN_NAME.to_owned(),
                        role: Role::Admin,
                        token_id: token_id.clone(),
                        token_sha256: secrets::token_hash(&token),
                        expires_at_ms: None,
                    },
                    &|technician_id: &String| AuditEntry {
                        technician_id: None,
                        token_id: None,
                        action: "api-token.create".into(),
                        subject: token_id.clone(),
                        detail: format!(
                            "by data dir init; technician {INITIAL_ADMIN_NAME} ({technician_id}); role admin"
                        ),
                    },
                    clock.now_ms(),
                )
                .await?;
            tracing::info!(
                path = %root.join(INITIAL_ADMIN_TOKEN).display(),
                "wrote the initial admin API token"
            );
        }
        Ok(Self {
            root,
            store,
            ca,
            replica_id,
            audit,
        })
    }

    /// The data dir's path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The server certificate chain and key for `extra_names` plus the
    /// defaults, reusing the one on disk while it covers every name and is
    /// not close to expiry.
    pub fn server_identity(
        &self,
        extra_names: &[String],
        now_ms: i64,
    ) -> Result<KeyAndCert, DataDirError> {
        server_identity(&self.root, &self.ca, extra_names, now_ms)
    }
}

/// The CA set of the data dir at `root`, brought in line with the store's
/// CAs (see [`rotation`]), under the init lock: `serve` calls it when the
/// store's CAs change.
pub async fn reload_cas(
    root: &Path,
    store: &dyn store::Store,
) -> Result<rotation::CaSet, DataDirError> {
    let _lock = InitLock::take(root)?;
    ca_set_locked(root, store).await
}

async fn ca_set_locked(
    root: &Path,
    store: &dyn store::Store,
) -> Result<rotation::CaSet, DataDirError> {
    let (cert, key) = match (read(&root.join(CA_CERT))?, read(&root.join(CA_KEY))?) {
        (Some(cert), Some(key)) => (cert, key),
        _ => {
            return Err(DataDirError::Io {
                what: "the CA is missing from",
                path: root.to_path_buf(),
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
    };
    rotation::sync(root, store, cert, key).await
}

/// The server certificate chain and key in the data dir at `root` for
/// `extra_names` plus the defaults, issued by the CA set's serving CA;
/// the one on disk is reused while it covers every name, comes from that
/// CA and is not close to expiry.
pub fn server_identity(
    root: &Path,
    cas: &rotation::CaSet,
    extra_names: &[String],
    now_ms: i64,
) -> Result<KeyAndCert, DataDirError> {
    let _lock = InitLock::take(root)?;
    let serving = cas.serving();
    let mut wanted: Vec<String> = DEFAULT_SERVER_NAMES
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    for name in extra_names {
        if !wanted.contains(name) {
            wanted.push(name.clone());
        }
    }
    let cert_path = root.join(SERVER_CERT);
    let key_path = root.join(SERVER_KEY);
    if let (Some(cert_pem), Some(key_pem)) = (read(&cert_path)?, read(&key_path)?) {
        let (names, expiry) = pki::names_and_expiry(&cert_pem)?;
        let fresh = expiry.saturating_mul(1000) > now_ms + SERVER_CERT_RENEW_BEFORE_SECS * 1000;
        let issued_by_this_ca = cert_pem.ends_with(serving.cert_pem());
        if fresh && issued_by_this_ca && wanted.iter().all(|n| names.contains(n)) {
            return Ok(KeyAndCert { cert_pem, key_pem });
        }
    }
    let made = serving.issue_server_cert(&wanted)?;
    write_atomic(&key_path, made.key_pem.as_bytes(), 0o600)?;
    write_atomic(&cert_path, made.cert_pem.as_bytes(), 0o644)?;
    tracing::info!(names = ?wanted, ca = %serving.fingerprint(), "issued a new server certificate");
    Ok(made)
}

/// Installs the fleet CA's certificate and key into the data dir at `root`
/// (D2: how a second replica gets the fleet CA). The pair is checked first;
/// the old server certificate is removed so the next `serve` issues one from
/// the imported CA.
pub fn import_ca(
    root: &Path,
    cert_pem: &str,
    key_pem: &str,
) -> Result<CertificateAuthority, DataDirError> {
    let ca = CertificateAuthority::load(cert_pem, key_pem)?;
    if !pki::is_ca_for_key(cert_pem, key_pem)? {
        return Err(PkiError::Parse("the key does not belong to the CA certificate".into()).into());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(io("cannot create data dir", root))?;
    let _lock = InitLock::take(root)?;
    write_atomic(&root.join(CA_KEY), key_pem.as_bytes(), 0o600)?;
    write_atomic(&root.join(CA_CERT), cert_pem.as_bytes(), 0o644)?;
    for stale in [
        SERVER_CERT,
        SERVER_KEY,
        rotation::NEXT_CA_CERT,
        rotation::NEXT_CA_KEY,
    ] {
        match fs::remove_file(root.join(stale)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot remove", &root.join(stale))(e)),
        }
    }
    Ok(ca)
}

/// What `restore` put in place.
#[derive(Debug)]
pub struct Restored {
    /// The database file restored into.
    pub database: PathBuf,
    /// The restored audit chain's head seq.
    pub audit_head: i64,
    /// Where the anchor file was kept whole, and how many anchors past the
    /// backup's chain left it, when any did.
    pub anchors_set_aside: Option<(PathBuf, usize)>,
}

/// Puts the SQLite backup `from` (made by `deskpulse-collector backup`) in
/// place as the data dir's database, with the collector stopped: the copy
/// is opened and checked beside the database, made whole (no `-wal`), and
/// renamed over it; the old database's `-wal` and `-shm` go first, or
/// SQLite would replay the lost database's log onto the backup. Anchors
/// past the backup's chain are set aside (the entries they anchored are
/// not in the backup), so that the restored chain verifies.
pub async fn restore(
    config: &StoreConfig,
    from: &Path,
    clock: &dyn Clock,
) -> Result<Restored, DataDirError> {
    use crate::store::SharedQueries as _;
    let Some(database) = config.database_url.strip_prefix("sqlite://") else {
        return Err(DataDirError::NotEmbedded);
    };
    let database = PathBuf::from(database);
    let root = config.data_dir.clone();
    fs::File::open(from).map_err(io("cannot read the backup", from))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&root)
        .map_err(io("cannot create data dir", &root))?;
    let _lock = InitLock::take(&root)?;
    for key in [CA_CERT, CA_KEY, crate::audit::AUDIT_KEY] {
        let path = root.join(key);
        if !path.try_exists().map_err(io("cannot read", &path))? {
            return Err(DataDirError::Io {
                what: "a backup is restored into the data dir that holds the fleet's keys \
                       (ca.pem, ca.key, audit.key); copy them from the old data dir first: missing",
                path,
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
    }
    let staged = sibling(&database, ".restoring");
    for stale in ["", "-wal", "-shm"] {
        remove_if_present(&sibling(&staged, stale))?;
    }
    fs::copy(from, &staged).map_err(io("cannot copy the backup to", &staged))?;
    let opened = store::sqlite::SqliteStore::open(&staged).await;
    let store = match opened {
        Ok(store) => store,
        Err(error) => {
            remove_if_present(&staged)?;
            return Err(DataDirError::NotABackup {
                from: from.to_path_buf(),
                reason: error.to_string(),
            });
        }
    };
    let checked = async {
        if !store.has_technicians().await? {
            return Ok(None);
        }
        Ok::<_, StoreError>(Some(store.audit_head().await?.seq))
    }
    .await;
    // Closing the last connection checkpoints the log into the file.
    store.close().await;
    let audit_head = match checked {
        Ok(Some(seq)) => seq,
        Ok(None) => {
            remove_if_present(&staged)?;
            return Err(DataDirError::NotABackup {
                from: from.to_path_buf(),
                reason: "it holds no fleet".into(),
            });
        }
        Err(error) => return Err(error.into()),
    };
    if fs::metadata(sibling(&staged, "-wal")).is_ok_and(|m| m.len() > 0) {
        return Err(DataDirError::Io {
            what: "the restored copy kept a write-ahead log beside it",
            path: staged,
            source: std::io::ErrorKind::Other.into(),
        });
    }
    fs::File::open(&staged)
        .and_then(|file| file.sync_all())
        .map_err(io("cannot sync", &staged))?;
    for stale in ["-wal", "-shm"] {
        remove_if_present(&sibling(&database, stale))?;
    }
    fs::rename(&staged, &database).map_err(io("cannot move the restored copy to", &database))?;
    if let Some(parent) = database.parent() {
        fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(io("cannot sync", parent))?;
    }
    let audit = crate::audit::AuditAnchor::load_or_create(&root)?;
    let anchors_set_aside =
        audit.set_aside_anchors_past(Some(audit_head), "before-restore", clock.now_ms())?;
    Ok(Restored {
        database,
        audit_head,
        anchors_set_aside,
    })
}

/// `path` with `suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn remove_if_present(path: &Path) -> Result<(), DataDirError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("cannot remove", path)(e)),
    }
}

fn load_or_create_ca(root: &Path) -> Result<CertificateAuthority, DataDirError> {
    let cert_path = root.join(CA_CERT);
    let key_path = root.join(CA_KEY);
    match (read(&cert_path)?, read(&key_path)?) {
        (Some(cert), Some(key)) => Ok(CertificateAuthority::load(&cert, &key)?),
        (None, None) => {
            let made = CertificateAuthority::generate()?;
            write_atomic(&key_path, made.key_pem.as_bytes(), 0o600)?;
            write_atomic(&cert_path, made.cert_pem.as_bytes(), 0o644)?;
            tracing::info!(dir = %root.display(), "created the fleet CA");
            Ok(CertificateAuthority::load(&made.cert_pem, &made.key_pem)?)
        }
        (Some(_), None) => Err(DataDirError::Io {
            what: "the CA key is missing beside",
            path: cert_path,
            source: std::io::ErrorKind::NotFound.into(),
        }),
        (None, Some(_)) => Err(DataDirError::Io {
            what: "the CA certificate is missing beside",
            path: key_path,
            source: std::io::ErrorKind::NotFound.into(),
        }),
    }
}

pub mod rotation;

#[cfg(test)]
mod tests;
