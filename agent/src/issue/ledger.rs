//! The per-user report ledger: what each local user reported in the last
//! [`WINDOW`], kept in the state dir so that restarting the service (or
//! reconnecting, or writing to the drop box instead of the socket) does not
//! reset anyone's limit.
//!
//! Every path a report takes into the spool goes through [`Ledger::admit`]:
//! the local endpoint, the drop box drain and the privileged offline CLI
//! (which holds the state dir lock, so it never races the service). A user
//! may send [`LIMIT`] reports per [`WINDOW`]; the same text again within the
//! window is not sent twice but answered with the earlier report's
//! reference. Nothing is refused silently: the employee reads why, in one
//! line.
//!
//! The file (`reports-sent.json`, 0600 like everything in the state dir)
//! holds per user the time, a SHA-256 of the text and the reference of each
//! report in the window, never the text itself. It is replaced atomically
//! (written beside, synced, renamed), so a crash leaves the old or the new
//! ledger, never half of one. A ledger that cannot be read is started
//! afresh with one warning: the collector's own limit (30 reports per host
//! an hour) still holds.
//!
//! Times are the PC's wall clock, which may jump: an entry dated more than
//! a window in the future (the clock was set back) is forgotten rather than
//! left to block its user until the clock catches up.
//!
//! Beside the window, the ledger remembers each user's reports for
//! [`KEEP_REPORTS`] (at most [`MAX_REPORTS`] per user): their references,
//! when they were made, and the ticket number once the collector's `Ack`
//! says it ([`Ledger::record_ticket`], issue 23). `report-issue` waits on
//! it for the number, "already sent" names the earlier report's ticket,
//! and `my-tickets` shows what this PC knows while it cannot reach the
//! collector.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The ledger's file in the state dir.
pub const FILE: &str = "reports-sent.json";
/// How many reports one user may send per [`WINDOW`].
pub const LIMIT: usize = 10;
/// The window of [`LIMIT`], and of duplicate texts.
pub const WINDOW: Duration = Duration::from_secs(3600);
/// How long a report's reference and ticket number are remembered.
pub const KEEP_REPORTS: Duration = Duration::from_secs(90 * 24 * 3600);
/// The most reports remembered per user (the oldest go first).
pub const MAX_REPORTS: usize = 100;
/// Users kept at most; past it, the ones whose last report is oldest go
/// first (a PC has a handful of users, a terminal server a few hundred).
const MAX_USERS: usize = 4096;

/// One report in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sent {
    /// When it was taken, by the PC's clock, ms since the Unix epoch.
    at_ms: i64,
    /// SHA-256 of its text, hex.
    text_sha256: String,
    /// Its reference: the report key the collector knows it by.
    reference: String,
}

/// A report remembered with its ticket number, once known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Known {
    /// Its reference: the report key.
    pub reference: String,
    /// When it was reported, by the PC's clock, ms since the Unix epoch.
    pub at_ms: i64,
    /// The ticket the collector opened or counted it on, once an `Ack`
    /// said so.
    pub ticket: Option<i64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    /// Per OS user, oldest first.
    users: BTreeMap<String, Vec<Sent>>,
    /// Per OS user, the reports of the last [`KEEP_REPORTS`], oldest
    /// first (absent from ledgers written before issue 23).
    #[serde(default)]
    reports: BTreeMap<String, Vec<Known>>,
}

/// What [`Ledger::admit`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Counted: spool the report under this reference.
    Admitted {
        /// The report key to send it with.
        reference: String,
    },
    /// The same text from the same user is already on its way.
    AlreadySent {
        /// The earlier report's reference.
        reference: String,
        /// When it was reported, ms since the Unix epoch.
        at_ms: i64,
        /// Its ticket, when the collector said it.
        ticket: Option<i64>,
    },
    /// The user used up the window; the line to show them.
    Limited(String),
}

/// The ledger, loaded from and saved to the state dir.
#[derive(Debug)]
pub struct Ledger {
    /// The file; `None` for a ledger kept in memory only.
    path: Option<PathBuf>,
    stored: Stored,
}

impl Ledger {
    /// The ledger in `state_dir`: empty when there is none yet, and when
    /// the file cannot be read (one warning).
    pub fn open(state_dir: &Path) -> Self {
        let path = state_dir.join(FILE);
        let stored = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(%error, file = %path.display(), "the report ledger cannot be read; starting a new one");
                Stored::default()
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(error) => {
                tracing::warn!(%error, file = %path.display(), "the report ledger cannot be read; starting a new one");
                Stored::default()
            }
        };
        Self {
            path: Some(path),
            stored,
        }
    }

    /// A ledger kept in memory only (tests, and a service whose state dir
    /// is not known yet).
    pub fn in_memory() -> Self {
        Self {
            path: None,
            stored: Stored::default(),
        }
    }

    /// Decides on a report of `text` by `user` at `now_ms`, and records it
    /// (saved before this returns) when admitted under `reference`.
    pub fn admit(&mut self, user: &str, text: &str, reference: &str, now_ms: i64) -> Admission {
        self.prune(now_ms);
        let digest = text_digest(text);
        let sent = self.stored.users.get(user).map_or(&[][..], Vec::as_slice);
        if let Some(earlier) = sent.iter().rev().find(|s| s.text_sha256 == digest) {
            return Admission::AlreadySent {
                reference: earlier.reference.clone(),
                at_ms: earlier.at_ms,
                ticket: self.ticket_of(&earlier.reference),
            };
        }
        if sent.len() >= LIMIT {
            let oldest = sent.first().map_or(now_ms, |s| s.at_ms);
            let frees_at = oldest.saturating_add(window_ms());
            let wait = Duration::from_millis(frees_at.saturating_sub(now_ms).max(1000) as u64);
            return Admission::Limited(limited_line(sent.len(), wait));
        }
        if !self.stored.users.contains_key(user) && self.stored.users.len() >= MAX_USERS {
            self.forget_quietest();
        }
        self.stored
            .users
            .entry(user.to_owned())
            .or_default()
            .push(Sent {
                at_ms: now_ms,
                text_sha256: digest,
                reference: reference.to_owned(),
            });
        let known = self.stored.reports.entry(user.to_owned()).or_default();
        known.push(Known {
            reference: reference.to_owned(),
            at_ms: now_ms,
            ticket: None,
        });
        let over = known.len().saturating_sub(MAX_REPORTS);
        known.drain(..over);
        self.save();
        Admission::Admitted {
            reference: reference.to_owned(),
        }
    }

    /// Takes back an admitted report that could not be spooled, so it
    /// counts for nothing and may be sent again.
    pub fn withdraw(&mut self, user: &str, reference: &str) {
        if let Some(sent) = self.stored.users.get_mut(user) {
            sent.retain(|s| s.reference != reference);
            if sent.is_empty() {
                self.stored.users.remove(user);
            }
        }
        if let Some(known) = self.stored.reports.get_mut(user) {
            known.retain(|k| k.reference != reference);
            if known.is_empty() {
                self.stored.reports.remove(user);
            }
        }
        self.save();
    }

    /// Records the ticket the collector says the report `reference` opened
    /// or was counted on; true when it was a report this ledger knows and
    /// the number is new to it (a collector cannot grow the ledger with
    /// references it makes up).
    pub fn record_ticket(&mut self, reference: &str, ticket: i64) -> bool {
        let Some(known) = self
            .stored
            .reports
            .values_mut()
            .flat_map(|known| known.iter_mut())
            .find(|k| k.reference == reference)
        else {
            return false;
        };
        if known.ticket == Some(ticket) {
            return false;
        }
        known.ticket = Some(ticket);
        self.save();
        true
    }

    /// The ticket of the report `reference`, once the collector said it.
    pub fn ticket_of(&self, reference: &str) -> Option<i64> {
        self.stored
            .reports
            .values()
            .flatten()
            .find(|k| k.reference == reference)
            .and_then(|k| k.ticket)
    }

    /// What this PC knows of `user`'s reports at `now_ms`, newest first.
    pub fn known(&mut self, user: &str, now_ms: i64) -> Vec<Known> {
        self.prune(now_ms);
        let mut known = self.stored.reports.get(user).cloned().unwrap_or_default();
        known.reverse();
        known
    }

    /// How many reports `user` has in the window at `now_ms`.
    pub fn count(&mut self, user: &str, now_ms: i64) -> usize {
        self.prune(now_ms);
        self.stored.users.get(user).map_or(0, Vec::len)
    }

    fn prune(&mut self, now_ms: i64) {
        let window = window_ms();
        let (earliest, latest) = (now_ms.saturating_sub(window), now_ms.saturating_add(window));
        self.stored.users.retain(|_, sent| {
            sent.retain(|s| s.at_ms > earliest && s.at_ms <= latest);
            !sent.is_empty()
        });
        let kept_from =
            now_ms.saturating_sub(i64::try_from(KEEP_REPORTS.as_millis()).unwrap_or(i64::MAX));
        self.stored.reports.retain(|_, known| {
            known.retain(|k| k.at_ms > kept_from && k.at_ms <= latest);
            !known.is_empty()
        });
    }

    fn forget_quietest(&mut self) {
        let quietest = self
            .stored
            .users
            .iter()
            .min_by_key(|(_, sent)| sent.last().map_or(i64::MIN, |s| s.at_ms))
            .map(|(user, _)| user.clone());
        if let Some(user) = quietest {
            self.stored.users.remove(&user);
        }
    }

    /// Replaces the file atomically. A failure is logged, not returned: the
    /// report itself must not be lost over its bookkeeping, and the ledger
    /// in memory still holds for this run.
    fn save(&self) {
        let Some(path) = &self.path else {
            return;
        };
        if let Err(error) = self.write(path) {
            tracing::warn!(%error, file = %path.display(), "the report ledger could not be saved; limits hold until the service restarts");
        }
    }

    fn write(&self, path: &Path) -> std::io::Result<()> {
        let body = serde_json::to_vec(&self.stored).map_err(std::io::Error::other)?;
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let mut file = tempfile::Builder::new()
            .prefix(".reports-sent")
            .tempfile_in(dir)?;
        file.write_all(&body)?;
        file.as_file().sync_all()?;
        file.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

fn window_ms() -> i64 {
    i64::try_from(WINDOW.as_millis()).unwrap_or(i64::MAX)
}

fn text_digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.trim().as_bytes()))
}

/// The line an employee reads when they used up the window.
fn limited_line(sent: usize, wait: Duration) -> String {
    format!(
        "you have sent {sent} reports in the last {} minutes and your help desk has them all; this one was not sent: try again in {}, or call your help desk if it is urgent",
        WINDOW.as_secs() / 60,
        humantime::format_duration(Duration::from_secs(wait.as_secs().max(1)))
    )
}

/// The line an employee reads when the same text is already on its way,
/// naming its ticket when the collector said it.
pub fn already_sent_line(reference: &str, at_ms: i64, now_ms: i64, ticket: Option<i64>) -> String {
    let ago = Duration::from_secs((now_ms.saturating_sub(at_ms).max(0) / 1000) as u64);
    let ago = if ago.as_secs() < 60 {
        "moments".to_owned()
    } else {
        humantime::format_duration(Duration::from_secs(ago.as_secs() / 60 * 60)).to_string()
    };
    let which = match ticket {
        Some(ticket) => format!("ticket #{ticket}, reference {}", short_reference(reference)),
        None => format!("reference {}", short_reference(reference)),
    };
    format!(
        "already sent: you reported the same thing {ago} ago ({which}); your help desk has it, so it was not sent again"
    )
}

/// The first block of a report key: enough for a help desk to find it.
pub fn short_reference(reference: &str) -> &str {
    reference.split('-').next().unwrap_or(reference)
}

#[cfg(test)]
mod tests;
