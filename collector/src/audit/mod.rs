//! The tamper-evident audit log (D28), outside the store: the entry hash,
//! the collector's audit key, the anchor file, and verification.
//!
//! The store keeps the log as a hash chain (each row's hash covers its
//! contents and the previous row's hash) and appends to it through one
//! function, `store::sql::audit::append`. A chain alone proves nothing
//! against someone who can write the database: they can recompute every
//! hash. So the chain's head (seq, hash, time) is signed with the audit key,
//! which lives in the data dir and never in the database, and appended as
//! one line to `audit-anchors.log`, an append-only file beside it. A
//! rewritten chain no longer has the anchored hash at the anchored seq.
//!
//! # Layout
//! - [`chain`]: the canonical encoding and the entry hash.
//! - this module: [`AuditAnchor`], the key and the anchor file, and the
//!   background task that anchors the head every minute.
//! - `verify`: walking the chain and the anchors, naming the first problem.

pub mod chain;
mod verify;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::store::{AuditHead, Store, StoreError};

pub use verify::Verification;

/// The audit key's file in the data dir: the Ed25519 PKCS#8 document in
/// hex, mode 0600.
pub const AUDIT_KEY: &str = "audit.key";
/// The anchor file in the data dir: one signed head per line, appended only.
pub const ANCHOR_LOG: &str = "audit-anchors.log";
/// How often `serve` anchors the head (only when it moved).
pub const ANCHOR_INTERVAL: Duration = Duration::from_secs(60);

/// What can go wrong with the audit key, the anchor file or verification.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The audit key file does not hold a key.
    #[error("the audit key {} is not an Ed25519 key: {reason}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One line of the anchor file: a chain head signed with the audit key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    /// The head's seq: how many entries the chain had.
    pub seq: i64,
    /// The hash of the entry at `seq` (`chain::GENESIS` for 0).
    pub hash: String,
    /// When it was signed, ms since the Unix epoch.
    pub at_ms: i64,
    /// The same time, RFC 3339, for people reading the file (not signed).
    pub at: String,
    /// The Ed25519 signature over [`Anchor::message`], hex.
    pub sig: String,
}

impl Anchor {
    /// The bytes the signature covers: a fixed prefix, then seq, hash and
    /// time as decimal and hex text, one per line.
    pub fn message(seq: i64, hash: &str, at_ms: i64) -> Vec<u8> {
        format!("deskpulse-audit-anchor-v1\n{seq}\n{hash}\n{at_ms}\n").into_bytes()
    }
}

/// An RFC 3339 UTC time, to the second, for messages.
pub fn rfc3339(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0).unsigned_abs());
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The collector's audit key and its anchor file.
pub struct AuditAnchor {
    key: Ed25519KeyPair,
    log: PathBuf,
    /// The head this process anchored last, so an idle minute writes
    /// nothing. Also serialises this process's writes to the file.
    last: Mutex<Option<AuditHead>>,
}

impl std::fmt::Debug for AuditAnchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditAnchor")
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> AuditError + 'a {
    move |source| AuditError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

impl AuditAnchor {
    /// Loads the audit key from `dir`, making one (0600) if there is none.
    /// The caller holds the data dir's init lock (D6), so two processes
    /// starting together never make two keys.
    pub fn load_or_create(dir: &Path) -> Result<Self, AuditError> {
        let path = dir.join(AUDIT_KEY);
        let bad = |reason: String| AuditError::Key {
            path: path.clone(),
            reason,
        };
        let pkcs8 = match std::fs::read_to_string(&path) {
            Ok(text) => hex::decode(text.trim()).map_err(|e| bad(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let made = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|_| bad("the system random source failed".into()))?;
                let text = format!("{}\n", hex::encode(made.as_ref()));
                crate::atomic_file::write_atomic(&path, text.as_bytes(), 0o600)
                    .map_err(|e| bad(e.to_string()))?;
                tracing::info!(path = %path.display(), "created the audit key");
                made.as_ref().to_vec()
            }
            Err(e) => return Err(io("cannot read", &path)(e)),
        };
        let key = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            key,
            log: dir.join(ANCHOR_LOG),
            last: Mutex::new(None),
        })
    }

    /// The anchor file's path.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Signs a head as an anchor line.
    pub fn sign(&self, head: &AuditHead, at_ms: i64) -> Anchor {
        let sig = self.key.sign(&Anchor::message(head.seq, &head.hash, at_ms));
        Anchor {
            seq: head.seq,
            hash: head.hash.clone(),
            at_ms,
            at: rfc3339(at_ms),
            sig: hex::encode(sig.as_ref()),
        }
    }

    /// True when `anchor`'s signature is this key's over its fields.
    pub fn signature_holds(&self, anchor: &Anchor) -> bool {
        let Ok(sig) = hex::decode(&anchor.sig) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, self.key.public_key().as_ref())
            .verify(
                &Anchor::message(anchor.seq, &anchor.hash, anchor.at_ms),
                &sig,
            )
            .is_ok()
    }

    /// Signs the store's current head and appends it to the anchor file
    /// (O_APPEND, fsynced), unless this process anchored that head already.
    /// Returns the anchor written, if any.
    pub async fn anchor(
        &self,
        store: &dyn Store,
        now_ms: i64,
    ) -> Result<Option<Anchor>, AuditError> {
        let head = store.audit_head().await?;
        let mut last = match self.last.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if last.as_ref() == Some(&head) {
            return Ok(None);
        }
        let anchor = self.sign(&head, now_ms);
        self.append_line(&anchor)?;
        *last = Some(head);
        Ok(Some(anchor))
    }

    fn append_line(&self, anchor: &Anchor) -> Result<(), AuditError> {
        let mut line = serde_json::to_string(anchor).unwrap_or_default();
        line.push('\n');
        // O_APPEND: every write lands at the end, even with serve and an
        // admin command appending at once; one write per line keeps lines
        // whole.
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.log)
            .map_err(io("cannot open", &self.log))?;
        file.write_all(line.as_bytes())
            .map_err(io("cannot append to", &self.log))?;
        file.sync_data().map_err(io("cannot sync", &self.log))?;
        Ok(())
    }

    /// Anchors the head, logging instead of failing: for callers whose own
    /// action has already committed.
    pub async fn anchor_or_warn(&self, store: &dyn Store, now_ms: i64) {
        if let Err(error) = self.anchor(store, now_ms).await {
            tracing::warn!(%error, "anchoring the audit chain head failed");
        }
    }

    /// The highest seq a well-signed line of the anchor file anchors, if
    /// any: the store's chain must reach at least that far, or the
    /// database lost writes it had committed (issue 20).
    pub fn newest_anchored_seq(&self) -> Result<Option<i64>, AuditError> {
        Ok(self
            .anchor_lines()?
            .iter()
            .filter_map(|line| serde_json::from_str::<Anchor>(line).ok())
            .filter(|anchor| self.signature_holds(anchor))
            .map(|anchor| anchor.seq)
            .max())
    }

    /// Moves the anchors past `keep_through` (every anchor when None) out
    /// of the anchor file, after a restore or a new fleet replaced the
    /// chain they anchored: the whole old file is kept beside it as
    /// `audit-anchors.log.<why>-<now_ms>`, and the file is rewritten
    /// atomically with the lines that still hold. Returns the file set
    /// aside and how many anchors left, when any did.
    pub fn set_aside_anchors_past(
        &self,
        keep_through: Option<i64>,
        why: &str,
        now_ms: i64,
    ) -> Result<Option<(PathBuf, usize)>, AuditError> {
        let lines = self.anchor_lines()?;
        let (kept, left): (Vec<&String>, Vec<&String>) = lines.iter().partition(|line| {
            match (serde_json::from_str::<Anchor>(line), keep_through) {
                (Ok(anchor), Some(head)) => anchor.seq <= head,
                (Ok(_), None) => false,
                // A line that is no anchor stays for verification to name.
                (Err(_), _) => true,
            }
        });
        if left.is_empty() {
            return Ok(None);
        }
        let aside = self
            .log
            .with_file_name(format!("{ANCHOR_LOG}.{why}-{now_ms}"));
        std::fs::copy(&self.log, &aside).map_err(io("cannot copy the anchor file to", &aside))?;
        let text: String = kept.iter().map(|line| format!("{line}\n")).collect();
        crate::atomic_file::write_atomic(&self.log, text.as_bytes(), 0o600).map_err(|e| {
            AuditError::Io {
                what: e.what,
                path: e.path,
                source: e.source,
            }
        })?;
        Ok(Some((aside, left.len())))
    }

    fn anchor_lines(&self) -> Result<Vec<String>, AuditError> {
        match std::fs::read_to_string(&self.log) {
            Ok(text) => Ok(text
                .lines()
                .filter(|line| !line.trim().is_empty())
                .map(str::to_owned)
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io("cannot read", &self.log)(e)),
        }
    }

    /// Checks the whole chain and every anchor line (see `verify`).
    pub async fn verify(&self, store: &dyn Store) -> Result<Verification, AuditError> {
        verify::verify(self, store).await
    }
}

/// Every [`ANCHOR_INTERVAL`] until shutdown: anchors the head if it moved.
pub async fn run_anchoring(
    anchor: std::sync::Arc<AuditAnchor>,
    store: crate::store::SharedStore,
    clock: crate::clock::SharedClock,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(ANCHOR_INTERVAL);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        anchor.anchor_or_warn(store.as_ref(), clock.now_ms()).await;
    }
    // One last anchor on the way out, so a clean stop leaves the final head
    // signed.
    anchor.anchor_or_warn(store.as_ref(), clock.now_ms()).await;
}

#[cfg(test)]
mod tests;
