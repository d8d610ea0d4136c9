//! What a webhook is and says: the receiver URL, secret and events an admin
//! may set, checked before anything is stored; the event a ticket change
//! raises; and the JSON body (documented in `docs/webhooks.md`). The ticket
//! engine builds the body inside the ticket's transaction and the CLI
//! checks its arguments with the same rules, so this depends on the domain
//! types alone, never on the store that delivers it.

use std::time::Duration;

use serde::Serialize;

use crate::model::{TicketChange, TicketEvent};

/// The longest URL accepted.
const MAX_URL: usize = 2048;
/// The longest secret accepted.
const MAX_SECRET: usize = 1024;

/// Checks a receiver URL: absolute http or https with a host, no user info
/// (a password in the URL would be shown by `deskpulse webhooks`).
pub fn check_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() || text.len() > MAX_URL {
        return Err(format!("the URL must be 1-{MAX_URL} characters"));
    }
    let uri: hyper::Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{text:?} must start with http:// or https://")),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{text:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{text:?} carries a user name or password; the webhook secret signs requests instead"
        ));
    }
    if authority.host().is_empty() {
        return Err(format!("{text:?} has no host"));
    }
    Ok(text.to_owned())
}

/// Checks a secret as read from a file, stdin or the environment: one
/// trailing newline is dropped; it must be non-empty and printable.
pub fn check_secret(text: &str) -> Result<String, String> {
    let secret = text.strip_suffix('\n').unwrap_or(text);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    if secret.trim().is_empty() {
        return Err("the webhook secret is empty".into());
    }
    if secret.len() > MAX_SECRET {
        return Err(format!(
            "the webhook secret is longer than {MAX_SECRET} bytes"
        ));
    }
    if secret.chars().any(char::is_control) {
        return Err("the webhook secret must be one line of printable text".into());
    }
    Ok(secret.to_owned())
}

/// Parses event names; none means every event. Duplicates are dropped.
pub fn parse_events<S: AsRef<str>>(names: &[S]) -> Result<Vec<TicketEvent>, String> {
    if names.is_empty() {
        return Ok(TicketEvent::ALL.to_vec());
    }
    let mut events = Vec::new();
    for name in names {
        let event: TicketEvent = name.as_ref().trim().parse()?;
        if !events.contains(&event) {
            events.push(event);
        }
    }
    Ok(events)
}

/// The event a technician's change raises, on either store backend. A reopen is `ticket.opened`: a
/// receiver paging on new problems wants to hear that one is back (the
/// payload's `flaps` and unchanged ticket id tell it apart from a new one).
pub fn event_of(change: &TicketChange) -> TicketEvent {
    match change {
        TicketChange::Resolve(_) => TicketEvent::Resolved,
        TicketChange::Escalate => TicketEvent::Escalated,
        TicketChange::Reopen => TicketEvent::Opened,
        TicketChange::Assign(_)
        | TicketChange::Note(_)
        | TicketChange::PublicNote(_)
        | TicketChange::Status(_) => TicketEvent::Updated,
    }
}

/// The ticket as a webhook payload shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TicketPayload {
    /// The ticket id.
    pub id: i64,
    /// The title.
    pub title: String,
    /// The host id.
    pub host_id: String,
    /// The host's current name.
    pub hostname: String,
    /// The rule that opened it; empty for a manual ticket.
    pub rule: String,
    /// The subject (mount point, service, ...), or empty.
    pub subject: String,
    /// new, open, in_progress, waiting, resolved, closed.
    pub status: String,
    /// "P1" … "P4".
    pub priority: String,
    /// critical, high, medium, low.
    pub severity: String,
    /// The technician working it.
    pub assignee: Option<String>,
    /// The escalation level.
    pub escalation: u32,
    /// How often its condition fired.
    pub occurrences: u32,
    /// How often it reopened after resolving.
    pub flaps: u32,
    /// RFC 3339 times.
    pub opened_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// When it resolved, if it is resolved.
    pub resolved_at: Option<String>,
    /// When the first response is due.
    pub response_due: String,
    /// When the resolution is due.
    pub resolution_due: String,
    /// How it was resolved, if a technician resolved it.
    pub resolution: Option<String>,
    /// Earlier resolutions suggested when it opened, best first (issue 23).
    pub suggestions: Vec<crate::suggest::SuggestionPayload>,
}

/// An RFC 3339 UTC time with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0).unsigned_abs());
    humantime::format_rfc3339_millis(at).to_string()
}

#[derive(Serialize)]
struct Payload<'a> {
    event: &'static str,
    delivery_id: &'a str,
    occurred_at: String,
    ticket: &'a TicketPayload,
    /// What changed and who changed it (`super::change`); absent only
    /// from events raised without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    change: Option<&'a super::change::Change>,
}

/// The JSON body of one delivery.
pub fn payload(
    event: TicketEvent,
    delivery_id: &str,
    occurred_at_ms: i64,
    ticket: &TicketPayload,
) -> String {
    payload_with_change(event, delivery_id, occurred_at_ms, ticket, None)
}

/// The JSON body of one delivery, with what changed and who changed it.
pub fn payload_with_change(
    event: TicketEvent,
    delivery_id: &str,
    occurred_at_ms: i64,
    ticket: &TicketPayload,
    change: Option<&super::change::Change>,
) -> String {
    let body = Payload {
        event: event.name(),
        delivery_id,
        occurred_at: rfc3339(occurred_at_ms),
        ticket,
        change,
    };
    // Serialising plain strings and numbers cannot fail.
    serde_json::to_string(&body).unwrap_or_default()
}
