//! `deskpulse-collector ca rotate | status | retire`: rotating the fleet
//! CA, run on a collector's data dir (docs/ca-rotation.md). Each change is
//! one audited store transaction; the data dir follows the store
//! ([`crate::datadir::rotation`]), and so does every running replica
//! within seconds ([`crate::server::rotation`]).

use std::path::Path;

use super::{LOCAL_ADMIN, open, store_failure};
use crate::clock::Clock;
use crate::config::StoreConfig;
use crate::exit::{CommandResult, Failure};
use crate::pki::CertificateAuthority;
use crate::pki::rotation::{check_new_ca, seal_key, validity_ms};
use crate::store::sql::fleet_ca::short;
use crate::store::{AuditEntry, CaRetirement, CaState, FleetCa, StoreError};

/// A CA brought in by the admin must live at least this long.
const MIN_NEW_CA_LIFE_MS: i64 = 365 * 24 * 3600 * 1000;

fn date(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}

fn conflict_or_runtime(error: StoreError) -> Failure {
    match error {
        StoreError::Conflict(line) => Failure::usage(line),
        other => store_failure(other),
    }
}

/// `ca rotate [--cert FILE --key FILE]`: a new active CA (made here, P-256
/// like the first, or the admin's), the current one kept as the old CA
/// until `ca retire`.
pub async fn rotate(
    config: &StoreConfig,
    clock: &dyn Clock,
    files: Option<(&Path, &Path)>,
) -> CommandResult {
    let now = clock.now_ms();
    // The admin's files are checked before anything is opened or written.
    let brought = match files {
        Some((cert_file, key_file)) => {
            let read = |path: &Path| {
                std::fs::read_to_string(path)
                    .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))
            };
            let (cert, key) = (read(cert_file)?, read(key_file)?);
            let ca = check_new_ca(&cert, &key, now, MIN_NEW_CA_LIFE_MS).map_err(|e| {
                Failure::usage(format!(
                    "{} / {}: {e}",
                    cert_file.display(),
                    key_file.display()
                ))
            })?;
            Some((ca, key))
        }
        None => None,
    };
    let dir = open(config, clock).await?;
    let cas = dir.store.fleet_cas().await.map_err(store_failure)?;
    if let Some(old) = cas.iter().find(|ca| ca.state == CaState::Old) {
        return Err(Failure::usage(format!(
            "a CA rotation is already in progress: the old CA {} is still trusted ({} host(s) hold \
             its certificates); finish it with `deskpulse-collector ca retire` before rotating again",
            short(&old.sha256),
            old.hosts
        )));
    }
    let (new, new_key, how) = match brought {
        Some((ca, key)) => (ca, key, "brought by the admin"),
        None => {
            let day = date(now).get(..10).unwrap_or_default().to_owned();
            let made = CertificateAuthority::generate_named(&format!("Deskpulse fleet CA {day}"))
                .map_err(Failure::runtime)?;
            let ca = CertificateAuthority::load(&made.cert_pem, &made.key_pem)
                .map_err(Failure::runtime)?;
            (ca, made.key_pem, "made here")
        }
    };
    if let Some(known) = cas.iter().find(|ca| ca.sha256 == new.fingerprint()) {
        return Err(Failure::usage(format!(
            "that CA is already the fleet's {} CA {}; a rotation needs a new one",
            known.state.as_str(),
            short(&known.sha256)
        )));
    }
    let active = dir.ca.active.fingerprint();
    let active_key = std::fs::read_to_string(dir.root().join("ca.key")).map_err(|e| {
        Failure::runtime(format!(
            "cannot read {}: {e}",
            dir.root().join("ca.key").display()
        ))
    })?;
    let sealed = seal_key(&active_key, &new_key, &new.fingerprint()).map_err(Failure::runtime)?;
    let (_, expires) = validity_ms(new.cert_pem()).map_err(Failure::runtime)?;
    let record = FleetCa {
        sha256: new.fingerprint(),
        cert_pem: new.cert_pem().to_owned(),
        sealed_key: Some(sealed),
        sealed_by: Some(active.clone()),
        state: CaState::Active,
        created_at_ms: now,
        expires_at_ms: expires,
        retired_at_ms: None,
        hosts: 0,
    };
    let entry = AuditEntry {
        technician_id: None,
        token_id: None,
        action: "ca.rotate".into(),
        subject: record.sha256.clone(),
        detail: format!("by {LOCAL_ADMIN}; new CA {how}; old CA {active}"),
    };
    dir.store
        .rotate_fleet_ca(&active, &record, &entry, now)
        .await
        .map_err(conflict_or_runtime)?;
    dir.audit.anchor_or_warn(dir.store.as_ref(), now).await;
    // This data dir takes the new CA the way every other replica does.
    crate::datadir::reload_cas(dir.root(), dir.store.as_ref())
        .await
        .map_err(Failure::runtime)?;
    let on_old = cas
        .iter()
        .find(|ca| ca.sha256 == active)
        .map_or(0, |ca| ca.hosts);
    outln!("{}", record.sha256);
    errln!(
        "rotated the fleet CA: the new active CA {} (expires {}) issues host certificates from \
         now on; the old CA {} stays trusted until `deskpulse-collector ca retire`. {on_old} \
         host(s) hold certificates from the old CA: connected agents renew onto the new one \
         within seconds, the others when they next connect; watch `deskpulse-collector ca status`",
        short(&record.sha256),
        date(expires),
        short(&active)
    );
    Ok(())
}

/// `ca status`: each CA with its pin, dates, state and hosts.
pub async fn status(config: &StoreConfig, clock: &dyn Clock) -> CommandResult {
    let dir = open(config, clock).await?;
    let cas = dir.store.fleet_cas().await.map_err(store_failure)?;
    outln!(
        "{:<8} {:<64} {:<20} {:<20} {:<20} {:>6}",
        "STATE",
        "SHA256 (PIN)",
        "CREATED",
        "EXPIRES",
        "RETIRED",
        "HOSTS"
    );
    for ca in &cas {
        outln!(
            "{:<8} {:<64} {:<20} {:<20} {:<20} {:>6}",
            ca.state.as_str(),
            ca.sha256,
            date(ca.created_at_ms),
            date(ca.expires_at_ms),
            ca.retired_at_ms.map_or_else(|| "-".to_owned(), date),
            ca.hosts
        );
    }
    match cas.iter().find(|ca| ca.state == CaState::Old) {
        Some(old) if old.hosts > 0 => errln!(
            "rotation in progress: {} host(s) still hold certificates from the old CA {}; retire \
             it once none do",
            old.hosts,
            short(&old.sha256)
        ),
        Some(old) => errln!(
            "rotation in progress: no host holds a certificate from the old CA {} any more; \
             `deskpulse-collector ca retire` is safe",
            short(&old.sha256)
        ),
        None => errln!("no rotation in progress"),
    }
    Ok(())
}

/// `ca retire [--force]`: the old CA is no longer trusted.
pub async fn retire(config: &StoreConfig, clock: &dyn Clock, force: bool) -> CommandResult {
    let dir = open(config, clock).await?;
    let now = clock.now_ms();
    let outcome = dir
        .store
        .retire_fleet_ca(force, LOCAL_ADMIN, now)
        .await
        .map_err(conflict_or_runtime)?;
    match outcome {
        CaRetirement::HostsRemain { sha256, hosts } => Err(Failure::usage(format!(
            "{hosts} host(s) still hold certificates from the old CA {}: retiring it now cuts them \
             off; wait until `deskpulse-collector ca status` shows 0, or retire anyway with --force \
             and enroll those PCs again",
            short(&sha256)
        ))),
        CaRetirement::Done { sha256, hosts } => {
            dir.audit.anchor_or_warn(dir.store.as_ref(), now).await;
            crate::datadir::reload_cas(dir.root(), dir.store.as_ref())
                .await
                .map_err(Failure::runtime)?;
            errln!(
                "retired the old CA {}: its host certificates are refused, and the collectors \
                 present a server certificate from the active CA within seconds{}; the pin for new \
                 enrollments is now {}",
                short(&sha256),
                if hosts > 0 {
                    format!("; {hosts} host(s) still on it must enroll again with a fresh token")
                } else {
                    String::new()
                },
                dir.ca.active.fingerprint()
            );
            Ok(())
        }
    }
}
