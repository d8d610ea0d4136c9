//! `deskpulse-agent report-issue "TEXT"`: an employee's problem report. It
//! becomes a [`UserIssue`] report in the durable spool's results class, so
//! it is never dropped and survives days offline.
//!
//! With the service running, the CLI sends the text over the local endpoint
//! (D12, a socket on Unix, a named pipe on Windows); the service names the
//! reporter from the connection (peer credentials, the pipe client's
//! token; never from anything the caller says), takes a fresh health
//! sample and spools the report ([`IssueRequest`], handled in
//! `session::run_service`). Without the service, a CLI that may open the
//! spool (root, an administrator) takes the state dir lock itself and
//! appends the report ([`report_offline`]); any other employee's report
//! waits in the drop box ([`dropbox`]) until the service runs again. Either
//! way the next service run sends it.
//!
//! Each user may report [`ledger::LIMIT`] issues per [`ledger::WINDOW`], and
//! the same text again within the window is answered "already sent" with
//! the earlier report's reference ([`ledger`]): a stuck key or a script
//! cannot bury the help desk. The ledger is kept in the state dir, so a
//! restart does not reset it, and every path into the spool (the live
//! endpoint, the drop box drain, the privileged offline CLI) goes through
//! it.
//!
//! Once the collector has the report, its `Ack` names the ticket, which
//! the ledger keeps beside the report's reference: the live endpoint waits
//! a few seconds for it so that `report-issue` can print the number, and
//! [`tickets`] (`my-tickets`) shows the employee their tickets (issue 23).

use std::path::Path;

use deskpulse_proto::v1::report::Payload;
use deskpulse_proto::v1::{HealthSample, UserIssue};
use tokio::sync::oneshot;

use crate::collect::HealthSampler;
use crate::config::AgentConfig;
use crate::spool::{Spool, SpoolError};
use crate::state::{StateDir, StateError};

pub mod dropbox;
pub mod ledger;
pub mod tickets;

/// The per-user ledger every path into the spool goes through, shared by
/// the live endpoint and the drop box drain.
pub type SharedLedger = std::sync::Arc<std::sync::Mutex<ledger::Ledger>>;

/// Locks the shared ledger; a panic elsewhere cannot leave plain counts
/// worth refusing every employee for.
pub fn lock(ledger: &SharedLedger) -> std::sync::MutexGuard<'_, ledger::Ledger> {
    ledger
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The longest report, in characters, after trimming.
pub const MAX_CHARS: usize = 2000;

/// The text as it will be sent: trimmed, 1 to [`MAX_CHARS`] characters,
/// with no control characters other than newline and tab. The error is
/// one line for the user.
pub fn validate_text(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(
            "the issue text is empty; say what is wrong, e.g. \"Outlook keeps crashing\"".into(),
        );
    }
    let chars = text.chars().count();
    if chars > MAX_CHARS {
        return Err(format!(
            "the issue text has {chars} characters; the most is {MAX_CHARS}"
        ));
    }
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() && *c != '\n' && *c != '\t')
    {
        return Err(format!(
            "the issue text contains the control character U+{:04X}; only newlines and tabs are allowed",
            u32::from(c)
        ));
    }
    Ok(text.to_owned())
}

/// The name `passwd` gives `uid`.
pub fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

/// The reporting user's name from `etc/passwd` under the system root (D13),
/// else "uid N" (a directory user that passwd does not list).
pub fn os_user(root: &Path, uid: u32) -> String {
    std::fs::read_to_string(root.join("etc/passwd"))
        .ok()
        .and_then(|passwd| user_name(&passwd, uid))
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// A new report's idempotency key: a random UUID, made once when the
/// employee reports and kept with the report from then on (in the drop box
/// file, then in the spooled report), so a report sent again after the
/// state dir is rolled back raises no second ticket.
pub fn new_report_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The report's payload.
pub fn payload(
    text: String,
    os_user: String,
    health: HealthSample,
    report_key: String,
    reporter_email: Option<String>,
) -> Payload {
    Payload::UserIssue(UserIssue {
        text,
        os_user,
        health: Some(health),
        report_key,
        reporter_email: reporter_email.unwrap_or_default(),
    })
}

/// The reporter's e-mail address (issue 23): the one they gave
/// (`report-issue --email`, checked), else `os_user` at the config's
/// `reporter_email_domain` when that makes a plain address (a Windows
/// `DOMAIN\user` gives `user`; a name that is no address part gives none).
pub fn reporter_email(
    given: Option<&str>,
    os_user: &str,
    domain: Option<&str>,
) -> Result<Option<String>, String> {
    if let Some(given) = given {
        return deskpulse_proto::email::check(given).map(Some);
    }
    let Some(domain) = domain else {
        return Ok(None);
    };
    let user = os_user.rsplit('\\').next().unwrap_or(os_user);
    Ok(deskpulse_proto::email::check(&format!("{user}@{domain}"))
        .ok()
        .map(|address| address.to_lowercase()))
}

/// A report handed from the local endpoint to the service loop, which owns
/// the spool and has the health sample taken off the loop.
#[derive(Debug)]
pub struct IssueRequest {
    /// The validated text.
    pub text: String,
    /// Who reported it, named from the connection (or the drop box file's
    /// owner).
    pub os_user: String,
    /// When it was reported, if not now: a report from the drop box was
    /// written while the service was stopped.
    pub reported_at_unix_ms: Option<i64>,
    /// Its idempotency key ([`new_report_key`]).
    pub report_key: String,
    /// The reporter's e-mail address, checked ([`reporter_email`]).
    pub reporter_email: Option<String>,
    /// Answered once the report is durable: `Ok(true)` when the service is
    /// connected to the collector, `Ok(false)` when it waits offline.
    pub reply: oneshot::Sender<Result<bool, String>>,
}

/// What can stop an offline report.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The state dir (lock, enrollment) failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The spool could not take the report.
    #[error("the report could not be saved in the spool: {0}")]
    Spool(#[from] SpoolError),
    /// The user used up their reports for the window (the line to show).
    #[error("{0}")]
    Limited(String),
    /// The same text is already on its way (the line to show).
    #[error("{0}")]
    AlreadySent(String),
}

/// Appends a report while the service is not running: takes the state dir
/// lock (so no service starts in between), samples health and spools the
/// report for `os_user` ([`caller`]). Returns its sequence number.
pub fn report_offline(
    config: &AgentConfig,
    state: &StateDir,
    text: String,
    os_user: String,
    reporter_email: Option<String>,
) -> Result<u64, IssueError> {
    state.credentials()?;
    let _lock = state.lock()?;
    let (mut spool, _recovery) = Spool::open(&state.spool_dir(), config.spool_limits)?;
    // The service's ledger, under the same lock: the offline path is held
    // to the same per-user limit.
    let mut ledger = ledger::Ledger::open(state.root());
    let now = crate::session::now_ms();
    let reference = match ledger.admit(&os_user, &text, &new_report_key(), now) {
        ledger::Admission::Admitted { reference } => reference,
        ledger::Admission::AlreadySent {
            reference,
            at_ms,
            ticket,
        } => {
            return Err(IssueError::AlreadySent(ledger::already_sent_line(
                &reference, at_ms, now, ticket,
            )));
        }
        ledger::Admission::Limited(line) => return Err(IssueError::Limited(line)),
    };
    let health = HealthSampler::with_settings(&config.system_root, config.health.clone()).sample();
    spool
        .push(
            payload(
                text,
                os_user.clone(),
                health,
                reference.clone(),
                reporter_email,
            ),
            now,
        )
        .map_err(|error| {
            ledger.withdraw(&os_user, &reference);
            IssueError::Spool(error)
        })
}

/// The user running this process, for the offline path, named as the
/// running service would name it: on Unix its uid's name under the system
/// root; on Windows its token's account, `DOMAIN\user`.
pub fn caller(root: &Path) -> String {
    #[cfg(unix)]
    {
        os_user(root, rustix::process::getuid().as_raw())
    }
    #[cfg(windows)]
    {
        let _ = root;
        crate::local::current_user().unwrap_or_else(|_| "unknown user".into())
    }
}

#[cfg(test)]
mod tests;
