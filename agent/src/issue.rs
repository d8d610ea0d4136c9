//! `deskpulse-agent report-issue "TEXT"`: an employee's problem report. It
//! becomes a [`UserIssue`] report in the durable spool's results class, so
//! it is never dropped and survives days offline.
//!
//! With the service running, the CLI sends the text over the local endpoint
//! (D12, a socket on Unix, a named pipe on Windows); the service names the
//! reporter from the connection (peer credentials, the pipe client's
//! token; never from anything the caller says), takes a fresh health
//! sample and spools the report ([`IssueRequest`], handled in
//! `session::run_service`). Without the service, the CLI takes the state
//! dir lock itself and appends the report ([`report_offline`]); the next
//! service run sends it.

use std::path::Path;

use deskpulse_proto::v1::report::Payload;
use deskpulse_proto::v1::{HealthSample, UserIssue};
use tokio::sync::oneshot;

use crate::collect::HealthSampler;
use crate::config::AgentConfig;
use crate::spool::{Spool, SpoolError};
use crate::state::{StateDir, StateError};

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

/// The report's payload.
pub fn payload(text: String, os_user: String, health: HealthSample) -> Payload {
    Payload::UserIssue(UserIssue {
        text,
        os_user,
        health: Some(health),
    })
}

/// A report handed from the local endpoint to the service loop, which owns
/// the spool and has the health sample taken off the loop.
#[derive(Debug)]
pub struct IssueRequest {
    /// The validated text.
    pub text: String,
    /// Who reported it, named from the connection.
    pub os_user: String,
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
}

/// Appends a report while the service is not running: takes the state dir
/// lock (so no service starts in between), samples health and spools the
/// report for `os_user` ([`caller`]). Returns its sequence number.
pub fn report_offline(
    config: &AgentConfig,
    state: &StateDir,
    text: String,
    os_user: String,
) -> Result<u64, IssueError> {
    state.credentials()?;
    let _lock = state.lock()?;
    let (mut spool, _recovery) = Spool::open(&state.spool_dir(), config.spool_limits)?;
    let health = HealthSampler::with_settings(&config.system_root, config.health.clone()).sample();
    Ok(spool.push(payload(text, os_user, health), crate::session::now_ms())?)
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
