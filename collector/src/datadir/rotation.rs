//! The fleet CAs as this replica holds them (docs/ca-rotation.md).
//! `ca.pem`/`ca.key` always hold the CA the server certificate comes from,
//! so `--ca-file ca.pem`, `ca export` and the enrollment pin keep working
//! through a rotation: outside a rotation that is the active CA; during
//! its overlap it is the old CA, and the new active CA waits beside it in
//! `ca-next.pem`/`ca-next.key` until `ca retire` moves it into place (which
//! also overwrites, so deletes, the retired CA's key).
//!
//! The store is the authority (D2, extended): a replica follows the
//! store's CAs at every open and whenever `serve` sees them change, taking
//! the new CA's key from the store by opening its seal with the key of the
//! CA it replaced ([`crate::pki::rotation::unseal_key`]), under the data
//! dir's init lock.

use std::path::Path;

use super::{CA_CERT, CA_KEY, DataDirError, read, remove_if_present};
use crate::atomic_file::write_atomic;
use crate::pki::rotation::{issued_by, unseal_key, validity_ms};
use crate::pki::{self, CertificateAuthority, PkiError};
use crate::store::{CaRecord, CaState, FleetCa, Store};

/// The new active CA's certificate during an overlap.
pub(crate) const NEXT_CA_CERT: &str = "ca-next.pem";
/// The new active CA's key during an overlap.
pub(crate) const NEXT_CA_KEY: &str = "ca-next.key";

/// A CA the fleet has had.
#[derive(Debug, Clone)]
pub struct KnownCa {
    /// The store's record.
    pub record: FleetCa,
    /// Its certificate, DER.
    pub cert_der: Vec<u8>,
}

/// The fleet CAs as this replica uses them.
#[derive(Debug)]
pub struct CaSet {
    /// Issues host certificates (enrollment and renewal).
    pub active: CertificateAuthority,
    /// The old CA in its overlap, when this data dir holds its key: it
    /// signs the server certificate, which agents not yet renewed verify
    /// against it.
    pub old: Option<CertificateAuthority>,
    /// Every CA the store records, oldest first.
    pub known: Vec<KnownCa>,
}

impl CaSet {
    /// The CA that signs the server certificate: the old one while agents
    /// may trust only it, else the active one.
    pub fn serving(&self) -> &CertificateAuthority {
        self.old.as_ref().unwrap_or(&self.active)
    }

    /// The CA certificates agents should trust for the collector, PEM: the
    /// active CA and, during an overlap, the old one.
    pub fn bundle_pem(&self) -> String {
        let mut bundle = self.active.cert_pem().to_owned();
        for ca in &self.known {
            if ca.record.state == CaState::Old && ca.record.sha256 != self.active.fingerprint() {
                bundle.push_str(&ca.record.cert_pem);
            }
        }
        bundle
    }

    /// The CA certificates a client certificate may chain to in the TLS
    /// handshake, PEM: every CA the fleet has had, so that a certificate
    /// from a retired CA reaches the session, which refuses it in words
    /// ([`CaSet::issuer_of`]) rather than with a TLS alert.
    pub fn client_roots_pem(&self) -> String {
        let mut roots = self.active.cert_pem().to_owned();
        for ca in &self.known {
            if ca.record.sha256 != self.active.fingerprint() {
                roots.push_str(&ca.record.cert_pem);
            }
        }
        roots
    }

    /// The CA that issued the DER certificate `leaf`.
    pub fn issuer_of(&self, leaf: &[u8]) -> Option<&KnownCa> {
        self.known.iter().find(|ca| issued_by(leaf, &ca.cert_der))
    }

    /// What the store says of the CAs, to notice a change: fingerprints and
    /// states.
    pub fn signature(&self) -> Vec<(String, CaState)> {
        signature(self.known.iter().map(|ca| &ca.record))
    }
}

/// Fingerprints and states of `records`, to compare CA sets.
pub fn signature<'a>(records: impl Iterator<Item = &'a FleetCa>) -> Vec<(String, CaState)> {
    records.map(|ca| (ca.sha256.clone(), ca.state)).collect()
}

fn load_pair(root: &Path, cert: &str, key: &str) -> Result<Option<(String, String)>, DataDirError> {
    Ok(match (read(&root.join(cert))?, read(&root.join(key))?) {
        (Some(cert), Some(key)) => Some((cert, key)),
        _ => None,
    })
}

fn is_pair(cert: &str, key: &str) -> bool {
    pki::is_ca_for_key(cert, key).unwrap_or(false)
}

fn first_record(ca: &CertificateAuthority) -> Result<FleetCa, DataDirError> {
    let (created, expires) = validity_ms(ca.cert_pem())?;
    Ok(FleetCa {
        sha256: ca.fingerprint(),
        cert_pem: ca.cert_pem().to_owned(),
        sealed_key: None,
        sealed_by: None,
        state: CaState::Active,
        created_at_ms: created,
        expires_at_ms: expires,
        retired_at_ms: None,
        hosts: 0,
    })
}

fn cannot(message: String) -> DataDirError {
    PkiError::Parse(message).into()
}

/// The key of `target` from its seal in the store, opened with `holder`'s
/// key (the CA it replaced), checked against its certificate.
fn unseal(
    target: &FleetCa,
    holder: &CertificateAuthority,
    holder_key: &str,
) -> Result<String, DataDirError> {
    let (Some(sealed), Some(by)) = (&target.sealed_key, &target.sealed_by) else {
        return Err(cannot(format!(
            "the fleet CA {} carries no sealed key; import it with `deskpulse-collector ca import`",
            target.sha256
        )));
    };
    if *by != holder.fingerprint() {
        return Err(cannot(format!(
            "this data dir holds the CA {}, but the fleet's CA {} was sealed under {by}; import \
             the fleet's CA with `deskpulse-collector ca import`",
            holder.fingerprint(),
            target.sha256
        )));
    }
    let key = unseal_key(holder_key, sealed, &target.sha256)?;
    if !is_pair(&target.cert_pem, &key) {
        return Err(cannot(format!(
            "the sealed key of CA {} does not belong to its certificate",
            target.sha256
        )));
    }
    Ok(key)
}

/// Brings the data dir at `root` in line with the store's CAs and returns
/// the set; the caller holds the init lock. `cert`/`key` are the data
/// dir's `ca.pem`/`ca.key`.
pub(super) async fn sync(
    root: &Path,
    store: &dyn Store,
    mut cert: String,
    key: String,
) -> Result<CaSet, DataDirError> {
    let next_pair = load_pair(root, NEXT_CA_CERT, NEXT_CA_KEY)?;
    if !is_pair(&cert, &key) {
        // Moving ca-next into place was cut short between its two files
        // (the key goes first): finish it.
        match &next_pair {
            Some((next_cert, next_key)) if *next_key == key && is_pair(next_cert, next_key) => {
                write_atomic(&root.join(CA_CERT), next_cert.as_bytes(), 0o644)?;
                cert = next_cert.clone();
            }
            _ => {
                return Err(cannot(format!(
                    "{CA_CERT} and {CA_KEY} in {} are not a CA and its key",
                    root.display()
                )));
            }
        }
    }
    let mut primary = CertificateAuthority::load(&cert, &key)?;
    let mut records = store.fleet_cas().await?;
    if records.is_empty() {
        // A new fleet, or one from before rotation: D2 says which CA it is.
        if let CaRecord::Mismatch(stored) = store.record_fleet_ca(&primary.fingerprint()).await? {
            return Err(DataDirError::CaMismatch {
                dir: root.to_path_buf(),
                local: primary.fingerprint(),
                stored,
            });
        }
        store
            .record_first_fleet_ca(&first_record(&primary)?)
            .await?;
        records = store.fleet_cas().await?;
    }
    let active = records
        .iter()
        .find(|ca| ca.state == CaState::Active)
        .ok_or_else(|| cannot("the store records no active fleet CA".into()))?
        .clone();
    let old = records.iter().find(|ca| ca.state == CaState::Old).cloned();
    let mine = records
        .iter()
        .find(|ca| ca.sha256 == primary.fingerprint())
        .cloned();
    let Some(mine) = mine.filter(|ca| ca.state != CaState::Retired || old.is_none()) else {
        return Err(DataDirError::CaMismatch {
            dir: root.to_path_buf(),
            local: primary.fingerprint(),
            stored: active.sha256.clone(),
        });
    };
    let next_matches = |pair: &Option<(String, String)>| {
        pair.as_ref()
            .and_then(|(c, k)| {
                CertificateAuthority::load(c, k)
                    .ok()
                    .filter(|_| is_pair(c, k))
            })
            .filter(|ca| ca.fingerprint() == active.sha256)
    };
    let (active_ca, old_ca) = if mine.sha256 == active.sha256 {
        // Outside a rotation (or a replica given the new CA by import).
        remove_if_present(&root.join(NEXT_CA_KEY))?;
        remove_if_present(&root.join(NEXT_CA_CERT))?;
        (primary, None)
    } else if old.as_ref().is_some_and(|o| o.sha256 == mine.sha256) {
        // In the overlap: this CA still serves; the new one waits beside it.
        let next = match next_matches(&next_pair) {
            Some(next) => next,
            None => {
                let next_key = unseal(&active, &primary, &key)?;
                write_atomic(&root.join(NEXT_CA_KEY), next_key.as_bytes(), 0o600)?;
                write_atomic(&root.join(NEXT_CA_CERT), active.cert_pem.as_bytes(), 0o644)?;
                tracing::info!(ca = %active.sha256, "took the fleet's new CA from the store");
                CertificateAuthority::load(&active.cert_pem, &next_key)?
            }
        };
        (next, Some(primary))
    } else {
        // This CA was retired: the active one moves into place, and its
        // key over this one's.
        let next_key = match next_matches(&next_pair) {
            Some(_) => next_pair.map(|(_, k)| k).unwrap_or_default(),
            None => unseal(&active, &primary, &key)?,
        };
        write_atomic(&root.join(CA_KEY), next_key.as_bytes(), 0o600)?;
        write_atomic(&root.join(CA_CERT), active.cert_pem.as_bytes(), 0o644)?;
        remove_if_present(&root.join(NEXT_CA_KEY))?;
        remove_if_present(&root.join(NEXT_CA_CERT))?;
        tracing::info!(retired = %mine.sha256, active = %active.sha256, "the old CA was retired: the data dir holds the active CA alone now");
        primary = CertificateAuthority::load(&active.cert_pem, &next_key)?;
        (primary, None)
    };
    if old.is_some() && old_ca.is_none() {
        tracing::warn!(
            "the fleet's old CA is in its overlap but this data dir lacks its key: this replica's \
             server certificate comes from the new CA, which agents not yet renewed do not trust"
        );
    }
    let known = records
        .into_iter()
        .map(|record| {
            let der = pki::first_cert_der(&record.cert_pem)?.to_vec();
            Ok(KnownCa {
                record,
                cert_der: der,
            })
        })
        .collect::<Result<Vec<_>, PkiError>>()?;
    Ok(CaSet {
        active: active_ca,
        old: old_ca,
        known,
    })
}
