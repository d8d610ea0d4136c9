//! The admin commands of `deskpulse-collector` that work on the data dir and
//! store directly, whether or not a server is running: `enroll-token
//! create`, `token create`, `ca export` and `audit verify`. Each command
//! that appends to the audit log anchors the chain head before it exits
//! (D28). A command that makes a secret
//! prints the secret alone on stdout; everything else goes to stderr.

use std::time::Duration;

use crate::clock::Clock;
use crate::config::StoreConfig;
use crate::datadir::{DataDir, DataDirError};
use crate::exit::{CommandResult, Failure};
use crate::secrets;
use crate::server::technician::new_enrollment_token;
use crate::store::{AuditEntry, NewApiToken, Role, StoreError};

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

/// `enroll-token create`: prints a new enrollment token.
pub async fn create_enrollment_token(
    config: &StoreConfig,
    clock: &dyn Clock,
    ttl: Duration,
    uses: u32,
) -> CommandResult {
    let dir = open(config, clock).await?;
    let now = clock.now_ms();
    let (token, record) = new_enrollment_token(now, ttl.as_secs(), uses, LOCAL_ADMIN);
    let entry = AuditEntry {
        technician_id: None,
        token_id: None,
        action: "enrollment-token.create".into(),
        subject: record.id.clone(),
        detail: format!("by {LOCAL_ADMIN}; ttl {}s; uses {uses}", ttl.as_secs()),
    };
    dir.store
        .create_enrollment_token(&record, &entry, now)
        .await
        .map_err(store_failure)?;
    dir.audit.anchor_or_warn(dir.store.as_ref(), now).await;
    println!("{token}");
    eprintln!(
        "enrollment token {} allows {uses} enrollment(s) and expires in {}",
        record.id,
        humantime::format_duration(ttl)
    );
    Ok(())
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

/// `token create`: prints a new API token for the named technician.
pub async fn create_api_token(
    config: &StoreConfig,
    clock: &dyn Clock,
    name: &str,
    role: Role,
) -> CommandResult {
    validate_technician_name(name).map_err(Failure::usage)?;
    let dir = open(config, clock).await?;
    let token = secrets::new_token(secrets::API_TOKEN_PREFIX);
    let token_id = uuid::Uuid::new_v4().to_string();
    let now = clock.now_ms();
    dir.store
        .create_api_token(
            &NewApiToken {
                technician_name: name.to_owned(),
                role,
                token_id: token_id.clone(),
                token_sha256: secrets::token_hash(&token),
            },
            &|technician_id: &String| AuditEntry {
                technician_id: None,
                token_id: None,
                action: "api-token.create".into(),
                subject: token_id.clone(),
                detail: format!(
                    "by {LOCAL_ADMIN}; technician {name} ({technician_id}); role {role}"
                ),
            },
            now,
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(message) => Failure::usage(message),
            other => Failure::runtime(other),
        })?;
    dir.audit.anchor_or_warn(dir.store.as_ref(), now).await;
    println!("{token}");
    eprintln!("API token {token_id} for {name} ({role})");
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
    eprintln!("imported the fleet CA (sha256 {})", ca.fingerprint());
    Ok(())
}

/// `ca export`: the CA certificate on stdout, its pin on stderr (D3).
pub async fn export_ca(config: &StoreConfig, clock: &dyn Clock) -> CommandResult {
    let dir = open(config, clock).await?;
    print!("{}", dir.ca.cert_pem());
    eprintln!("ca-sha256 {}", dir.ca.fingerprint());
    Ok(())
}

/// `audit verify`: walks the audit chain in the data dir's database and
/// checks every anchor line against it and the audit key (D28). Prints
/// "audit chain intact: N entries, M anchors" on stdout, or fails (exit 1)
/// with the first problem on one line.
pub async fn verify_audit(config: &StoreConfig, clock: &dyn Clock) -> CommandResult {
    let dir = open(config, clock).await?;
    let v = dir
        .audit
        .verify(dir.store.as_ref())
        .await
        .map_err(Failure::runtime)?;
    if let Some(problem) = v.problem {
        return Err(Failure::runtime(problem));
    }
    println!(
        "audit chain intact: {} entries, {} anchors",
        v.entries, v.anchors
    );
    Ok(())
}
