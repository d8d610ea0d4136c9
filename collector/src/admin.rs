//! The admin commands of `deskpulse-collector` that work on the data dir and
//! store directly, whether or not a server is running: `enroll-token
//! create`, `token create`, `user create|list|password|delete` (the web
//! console's local accounts), `ca export`, `audit verify` and `backup`; and
//! `restore`, with the server stopped. Each command
//! that appends to the audit log anchors the chain head before it exits
//! (D28). A command that makes a secret
//! prints the secret alone on stdout; everything else goes to stderr.
//! Both go through `deskpulse_proto::output` (the macros below), so a
//! closed pipe ends a command quietly with exit 141 and a full disk behind
//! `> file` with one line, never with `println!`'s panic.

#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clock::Clock;
use crate::config::StoreConfig;
use crate::datadir::{DataDir, DataDirError};
use crate::exit::{CommandResult, Failure};
use crate::secrets;
use crate::server::technician::new_enrollment_token;
use crate::store::{AuditEntry, NewApiToken, Role, StoreError};

/// Prints to stdout like `print!`; a closed pipe ends the command quietly.
macro_rules! out {
    ($($arg:tt)*) => {
        deskpulse_proto::output::write_stdout("deskpulse-collector", format!($($arg)*).as_bytes())
    };
}

/// Prints a line to stdout like `println!`, as `out!` does.
macro_rules! outln {
    ($($arg:tt)*) => { out!("{}\n", format_args!($($arg)*)) };
}

/// Prints a line to stderr like `eprintln!`; a closed pipe ends the
/// command quietly.
macro_rules! errln {
    ($($arg:tt)*) => {
        deskpulse_proto::output::write_stderr(format!("{}\n", format_args!($($arg)*)).as_bytes())
    };
}

pub mod rotation;

/// The audit actor name of commands run on the server itself.
pub const LOCAL_ADMIN: &str = "local-admin";

fn open_failure(error: DataDirError) -> Failure {
    if error.is_config() {
        Failure::usage(error)
    } else {
        Failure::runtime(error)
    }
}

fn store_failure(error: StoreError) -> Failure {
    Failure::runtime(error)
}

/// Opens (initialising if needed) the data dir.
pub async fn open(config: &StoreConfig, clock: &dyn Clock) -> CommandResult<DataDir> {
    DataDir::open(config, clock).await.map_err(open_failure)
}

/// Opens the data dir for `serve`; `init` (`serve --init`) allows a new
/// fleet beside an existing CA (see [`DataDir::open_with`]).
pub async fn open_for_serve(
    config: &StoreConfig,
    clock: &dyn Clock,
    init: bool,
) -> CommandResult<DataDir> {
    DataDir::open_with(config, clock, init)
        .await
        .map_err(open_failure)
}

/// `backup --to FILE`: a consistent copy of the live database, written
/// beside FILE and renamed into place once whole and synced, so FILE is
/// never half a backup.
pub async fn backup(config: &StoreConfig, clock: &dyn Clock, to: &Path) -> CommandResult {
    if to.exists() {
        return Err(Failure::usage(format!(
            "{} exists; backup writes a new file and never overwrites one",
            to.display()
        )));
    }
    let dir = open(config, clock).await?;
    let mut partial = to.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let cannot = |what: &str, path: &Path, error: std::io::Error| {
        Failure::runtime(format!("cannot {what} {}: {error}", path.display()))
    };
    if let Err(error) = std::fs::remove_file(&partial)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        return Err(cannot("remove", &partial, error));
    }
    if let Err(error) = dir.store.backup_to(&partial).await {
        let _ = std::fs::remove_file(&partial);
        return Err(match error {
            StoreError::Conflict(text) => Failure::usage(text),
            other => Failure::runtime(format!("backing up to {} failed: {other}", to.display())),
        });
    }
    std::fs::File::open(&partial)
        .and_then(|file| file.sync_all())
        .map_err(|e| cannot("sync", &partial, e))?;
    std::fs::rename(&partial, to).map_err(|e| cannot("rename the backup to", to, e))?;
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)
            .and_then(|file| file.sync_all())
            .map_err(|e| cannot("sync", parent, e))?;
    }
    let head = dir.store.audit_head().await.map_err(store_failure)?;
    errln!(
        "backed up the database to {} (audit chain through seq {})",
        to.display(),
        head.seq
    );
    Ok(())
}

/// `restore --from FILE`, with the collector stopped (see
/// [`crate::datadir::restore`]).
pub async fn restore(config: &StoreConfig, clock: &dyn Clock, from: &Path) -> CommandResult {
    let restored = crate::datadir::restore(config, from, clock)
        .await
        .map_err(open_failure)?;
    errln!(
        "restored {} into {} (audit chain through seq {})",
        from.display(),
        restored.database.display(),
        restored.audit_head
    );
    if let Some((aside, count)) = restored.anchors_set_aside {
        errln!(
            "{count} audit anchor(s) past the backup were set aside: the whole anchor file is kept \
             as {}",
            aside.display()
        );
    }
    Ok(())
}

/// `enroll-token create`: prints a new enrollment token; with `relink`
/// (a host name or id), a one-use token that re-links that host.
pub async fn create_enrollment_token(
    config: &StoreConfig,
    clock: &dyn Clock,
    ttl: Duration,
    uses: u32,
    relink: Option<&str>,
) -> CommandResult {
    if relink.is_some() && uses != 1 {
        return Err(Failure::usage(
            "a re-link token re-links one host: it has one use (drop --uses)",
        ));
    }
    let dir = open(config, clock).await?;
    let relink_host = match relink {
        Some(query) => Some(one_host(dir.store.as_ref(), query).await?),
        None => None,
    };
    // A revoked host comes back only as a new host (issue 20); the
    // enrollment refuses such a token too, this says so before it exists.
    if let Some(host) = &relink_host
        && let Some(detail) = dir.store.host_detail(host).await.map_err(store_failure)?
        && detail.revoked.is_some()
    {
        return Err(Failure::usage(format!(
            "host {host} was revoked: it cannot be re-linked; enroll the PC with an ordinary \
             token, as a new host"
        )));
    }
    let now = clock.now_ms();
    let (token, record) = new_enrollment_token(
        now,
        ttl.as_secs(),
        uses,
        LOCAL_ADMIN,
        relink_host.as_deref(),
    );
    let relinks = relink_host
        .as_deref()
        .map(|host| format!("; re-links host {host}"))
        .unwrap_or_default();
    let entry = AuditEntry {
        technician_id: None,
        token_id: None,
        action: "enrollment-token.create".into(),
        subject: record.id.clone(),
        detail: format!(
            "by {LOCAL_ADMIN}; ttl {}s; uses {uses}{relinks}",
            ttl.as_secs()
        ),
    };
    dir.store
        .create_enrollment_token(&record, &entry, now)
        .await
        .map_err(store_failure)?;
    dir.audit.anchor_or_warn(dir.store.as_ref(), now).await;
    outln!("{token}");
    errln!(
        "enrollment token {} allows {uses} enrollment(s) and expires in {}{relinks}",
        record.id,
        crate::units::duration(ttl)
    );
    Ok(())
}

/// The one host `query` (a host name, an id or a unique id prefix) names,
/// or a usage error naming the candidates (D4).
async fn one_host(store: &dyn crate::store::Store, query: &str) -> CommandResult<String> {
    let hosts = store.find_hosts(query).await.map_err(store_failure)?;
    match hosts.as_slice() {
        [host] => Ok(host.id.clone()),
        [] => Err(Failure::usage(format!("no host matches {query:?}"))),
        many => Err(Failure::usage(format!(
            "{query:?} matches several hosts: {}",
            many.iter()
                .map(|h| format!("{} ({})", h.hostname, h.id))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Checks a technician name: 1-64 printable characters, no surrounding space.
pub fn validate_technician_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || name.trim() != name
        || name.chars().any(char::is_control)
    {
        return Err(format!(
            "technician name {name:?} must be 1-64 printable characters without surrounding spaces"
        ));
    }
    Ok(())
}

/// The longest an API token may be made to last with `--expires`.
pub const MAX_API_TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `token create`: prints a new API token for the named technician; with
/// `expires`, one that stops working that long from now (issue 20).
pub async fn create_api_token(
    config: &StoreConfig,
    clock: &dyn Clock,
    name: &str,
    role: Role,
    expires: Option<Duration>,
) -> CommandResult {
    validate_technician_name(name).map_err(Failure::usage)?;
    if expires.is_some_and(|d| d.is_zero() || d > MAX_API_TOKEN_LIFETIME) {
        return Err(Failure::usage(
            "--expires must be more than 0 and at most 10 years",
        ));
    }
    let dir = open(config, clock).await?;
    let token = secrets::new_token(secrets::API_TOKEN_PREFIX);
    let token_id = uuid::Uuid::new_v4().to_string();
    let now = clock.now_ms();
    let expires_at_ms =
        expires.map(|d| now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
    dir.store
        .create_api_token(
            &NewApiToken {
                technician_name: name.to_owned(),
                role,
                token_id: token_id.clone(),
                token_sha256: secrets::token_hash(&token),
                expires_at_ms,
            },
            &|technician_id: &String| AuditEntry {
                technician_id: None,
                token_id: None,
                action: "api-token.create".into(),
                subject: token_id.clone(),
                detail: match expires_at_ms {
                    None => format!(
                        "by {LOCAL_ADMIN}; technician {name} ({technician_id}); role {role}"
                    ),
                    Some(at) => format!(
                        "by {LOCAL_ADMIN}; technician {name} ({technician_id}); role {role}; \
                         expires {}",
                        crate::server::technician::format_ms(at)
                    ),
                },
            },
            now,
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(message) => Failure::usage(message),
            other => Failure::runtime(other),
        })?;
    dir.audit.anchor_or_warn(dir.store.as_ref(), now).await;
    outln!("{token}");
    match expires_at_ms {
        None => errln!("API token {token_id} for {name} ({role})"),
        Some(at) => errln!(
            "API token {token_id} for {name} ({role}); expires {}",
            crate::server::technician::format_ms(at)
        ),
    }
    Ok(())
}

/// `ca import`: installs the fleet CA from PEM files, then opens the data
/// dir so the store confirms it is the fleet's CA (D2).
pub async fn import_ca(
    config: &StoreConfig,
    clock: &dyn Clock,
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
) -> CommandResult {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .map_err(|e| Failure::runtime(format!("cannot read {}: {e}", path.display())))
    };
    let (cert, key) = (read(cert_file)?, read(key_file)?);
    let ca = crate::datadir::import_ca(&config.data_dir, &cert, &key).map_err(open_failure)?;
    open(config, clock).await?;
    errln!("imported the fleet CA (sha256 {})", ca.fingerprint());
    Ok(())
}

/// `ca export`: the CA certificate on stdout, its pin on stderr (D3): the
/// CA the collectors' server certificate comes from, which an enrolling
/// agent's pin must name (during a rotation, the old CA until `ca retire`).
pub async fn export_ca(config: &StoreConfig, clock: &dyn Clock) -> CommandResult {
    let dir = open(config, clock).await?;
    let serving = dir.ca.serving();
    out!("{}", serving.cert_pem());
    errln!("ca-sha256 {}", serving.fingerprint());
    if serving.fingerprint() != dir.ca.active.fingerprint() {
        errln!(
            "a CA rotation is in progress: this is the old CA's pin, which enrolling agents need \
             until `deskpulse-collector ca retire`; from then on the pin is {}",
            dir.ca.active.fingerprint()
        );
    }
    Ok(())
}

/// `audit verify`: walks the audit chain in the data dir's database and
/// checks every anchor line against it and the audit key (D28). Prints
/// "audit chain intact: N entries, M anchors" on stdout, or fails (exit 1)
/// with the first problem on one line.
pub async fn verify_audit(config: &StoreConfig, clock: &dyn Clock) -> CommandResult {
    let dir = DataDir::open_to_verify(config, clock)
        .await
        .map_err(open_failure)?;
    let v = dir
        .audit
        .verify(dir.store.as_ref())
        .await
        .map_err(Failure::runtime)?;
    if let Some(problem) = v.problem {
        return Err(Failure::runtime(problem));
    }
    outln!(
        "audit chain intact: {} entries, {} anchors",
        v.entries,
        v.anchors
    );
    Ok(())
}

/// A new password for `name`'s local account: typed twice at the terminal
/// (without echo), or one line of stdin; checked for length.
fn read_new_password(name: &str) -> CommandResult<String> {
    let read = |prompt: &str| {
        crate::cli::login::read_secret_line(prompt)
            .map_err(|e| Failure::runtime(format!("cannot read the password: {e}")))
    };
    let password = read(&format!("New password for {name}: "))?;
    secrets::check_new_password(&password).map_err(Failure::usage)?;
    if crate::cli::login::stdin_is_terminal() && read("Again: ")? != password {
        return Err(Failure::usage("the two passwords differ; nothing changed"));
    }
    Ok(password)
}

/// Hashes a password off the async threads (Argon2id takes a while by
/// design).
async fn hash_password(password: String) -> CommandResult<String> {
    tokio::task::spawn_blocking(move || secrets::hash_password(&password))
        .await
        .map_err(|e| Failure::runtime(format!("hashing the password failed: {e}")))?
        .map_err(Failure::runtime)
}

/// `user create NAME --role ROLE`: a local account for the web console,
/// its password read from the terminal or stdin; the technician is made if
/// new (an existing one must have the role).
pub async fn create_local_user(
    config: &StoreConfig,
    clock: &dyn Clock,
    name: &str,
    role: Role,
) -> CommandResult {
    validate_technician_name(name).map_err(Failure::usage)?;
    let password = read_new_password(name)?;
    let password_hash = hash_password(password).await?;
    let dir = open(config, clock).await?;
    let now = clock.now_ms();
    dir.store
        .create_local_user(
            &crate::store::NewLocalUser {
                name: name.to_owned(),
                role,
                password_hash,
            },
            &|technician_id: &String| AuditEntry {
                technician_id: None,
                token_id: None,
                action: "local-user.create".into(),
                subject: technician_id.clone(),
                detail: format!("by {LOCAL_ADMIN}; technician {name}; role {role}"),
            },
            now,
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(message) => Failure::usage(message),
            other => Failure::runtime(other),
        })?;
    dir.audit.anchor_or_warn(dir.store.as_ref(), now).await;
    errln!("local account {name} ({role}) created; sign in to the web console with it");
    Ok(())
}

/// `user password NAME`: a new password for a local account; its web
/// sessions signed in with the old one end.
pub async fn reset_local_password(
    config: &StoreConfig,
    clock: &dyn Clock,
    name: &str,
) -> CommandResult {
    let dir = open(config, clock).await?;
    if dir
        .store
        .local_user_login(name)
        .await
        .map_err(store_failure)?
        .is_none()
    {
        return Err(Failure::usage(format!(
            "{name:?} has no local account; make one with `user create`"
        )));
    }
    let password = read_new_password(name)?;
    let password_hash = hash_password(password).await?;
    let now = clock.now_ms();
    let audit = AuditEntry::system(
        "local-user.password",
        name,
        &format!("by {LOCAL_ADMIN}; its password sessions ended"),
    );
    let changed = dir
        .store
        .set_local_password(name, &password_hash, &audit, now)
        .await
        .map_err(store_failure)?;
    if !changed {
        return Err(Failure::usage(format!("{name:?} has no local account")));
    }
    dir.audit.anchor_or_warn(dir.store.as_ref(), now).await;
    errln!("password of {name} set; its web sessions were signed out");
    Ok(())
}

/// `user delete NAME`: removes a local account and ends its password
/// sessions; the technician, its API tokens and its history stay.
pub async fn delete_local_user(
    config: &StoreConfig,
    clock: &dyn Clock,
    name: &str,
) -> CommandResult {
    let dir = open(config, clock).await?;
    let now = clock.now_ms();
    let audit = AuditEntry::system(
        "local-user.delete",
        name,
        &format!("by {LOCAL_ADMIN}; its password sessions ended"),
    );
    let deleted = dir
        .store
        .delete_local_user(name, &audit, now)
        .await
        .map_err(store_failure)?;
    if !deleted {
        return Err(Failure::usage(format!("{name:?} has no local account")));
    }
    dir.audit.anchor_or_warn(dir.store.as_ref(), now).await;
    errln!("local account {name} deleted");
    Ok(())
}

/// `user list`: every local account, one per line on stdout: name, role,
/// when made, when its password was last set.
pub async fn list_local_users(config: &StoreConfig, clock: &dyn Clock) -> CommandResult {
    let dir = open(config, clock).await?;
    let users = dir.store.list_local_users().await.map_err(store_failure)?;
    if users.is_empty() {
        errln!(
            "no local accounts; make one with `deskpulse-collector user create NAME --role ROLE`"
        );
    }
    for user in users {
        outln!(
            "{}\t{}\tcreated {}\tpassword set {}",
            user.name,
            user.role,
            crate::server::technician::format_ms(user.created_at_ms),
            crate::server::technician::format_ms(user.password_set_at_ms)
        );
    }
    Ok(())
}
