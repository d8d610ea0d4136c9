//! The agent session's part of the employee's side (issue 23): the ticket
//! number in the `Ack` of an employee's report, and `my-tickets` answered
//! from the store.
//!
//! A `MyTicketsRequest` names only the OS user; the host is the session's,
//! from its certificate, so an agent can ask for no other host's tickets.
//! The user it names is the agent's word (from the local connection's peer
//! credentials, D12): a hostile agent can name any user of its own host,
//! and no more. Answers are bounded ([`crate::store::MAX_REPORTER_TICKETS`]
//! tickets, [`crate::store::MAX_PUBLIC_NOTES`] public notes each, texts cut
//! at [`crate::store::MAX_EMPLOYEE_TEXT`] characters), carry no private
//! note, and a session is answered [`BURST`] times at once, then once per
//! [`REFILL`] ([`Pace`]).

use std::time::{Duration, Instant};

use deskpulse_proto::v1::{
    Ack, EmployeeTicket, MyTickets, MyTicketsRequest, PublicNote, ReportedTicket,
};
use tracing::warn;

use super::ServerContext;
use crate::store::{MAX_REPORTER_TICKETS, ReporterTicket};

/// Requests one session may have answered at once (a few users of one
/// PC asking together)...
pub const BURST: f64 = 5.0;
/// ...and then one per this; a request beyond is answered with an error
/// line.
pub const REFILL: Duration = Duration::from_secs(1);

/// The longest OS user name accepted, as for a report.
const MAX_OS_USER: usize = 256;

/// The reporter's address from a report, when it is a plain address; junk
/// from a hostile or broken agent is dropped with a warning and the report
/// goes on without it.
pub fn reporter_email(host_id: &str, said: &str) -> Option<String> {
    if said.is_empty() {
        return None;
    }
    match deskpulse_proto::email::check(said) {
        Ok(address) => Some(address),
        Err(reason) => {
            warn!(host = %host_id, %reason, "dropped a report's reporter e-mail address");
            None
        }
    }
}

/// The `Ack` of a committed report; for an employee's report with a key,
/// with the ticket it opened or was counted on (one indexed read, and only
/// for employee reports, which are few).
pub async fn ack(
    ctx: &ServerContext,
    host_id: &str,
    spool_id: String,
    seq: u64,
    report_key: Option<String>,
) -> Ack {
    let mut ack = Ack {
        spool_id,
        seq,
        reported: None,
    };
    let Some(report_key) = report_key else {
        return ack;
    };
    match ctx.store.ticket_for_report(host_id, &report_key).await {
        Ok(Some(ticket_id)) => {
            ack.reported = Some(ReportedTicket {
                report_key,
                ticket_id,
            });
        }
        Ok(None) => {}
        // The report is stored; only its number is missing, and
        // `my-tickets` shows it later.
        Err(error) => {
            warn!(%error, host = %host_id, "cannot read the ticket of an employee's report")
        }
    }
    ack
}

/// One session's pace of `my-tickets` requests: a token bucket of
/// [`BURST`], refilled one per [`REFILL`].
#[derive(Debug)]
pub struct Pace {
    tokens: f64,
    at: Instant,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            tokens: BURST,
            at: Instant::now(),
        }
    }
}

impl Pace {
    /// Takes one request's token at `now`; false when none is left.
    pub fn admit(&mut self, now: Instant) -> bool {
        let refilled = now.duration_since(self.at).as_secs_f64() / REFILL.as_secs_f64();
        self.tokens = (self.tokens + refilled).min(BURST);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Answers `request` for the session's `host_id` from the store.
pub async fn answer(
    ctx: &ServerContext,
    host_id: &str,
    pace: &mut Pace,
    request: MyTicketsRequest,
) -> MyTickets {
    let refused = |error: &str| MyTickets {
        request_id: request.request_id,
        error: error.to_owned(),
        ..MyTickets::default()
    };
    if !pace.admit(Instant::now()) {
        return refused("asked too often; try again in a moment");
    }
    let os_user = request.os_user.trim();
    if os_user.is_empty() || os_user.len() > MAX_OS_USER || os_user.chars().any(char::is_control) {
        warn!(host = %host_id, "refused a my-tickets request without a valid OS user");
        return refused("the request must name its OS user (1-256 bytes, no control characters)");
    }
    match ctx
        .store
        .reporter_tickets(host_id, os_user, MAX_REPORTER_TICKETS)
        .await
    {
        Ok(found) => MyTickets {
            request_id: request.request_id,
            tickets: found.tickets.into_iter().map(employee_ticket).collect(),
            truncated: found.truncated,
            error: String::new(),
        },
        Err(error) => {
            tracing::error!(%error, host = %host_id, "reading a reporter's tickets failed");
            refused("the collector cannot read tickets right now; try again later")
        }
    }
}

fn employee_ticket(found: ReporterTicket) -> EmployeeTicket {
    let t = found.ticket;
    EmployeeTicket {
        id: t.id,
        title: t.title,
        text: found.text,
        status: t.status,
        priority: t.priority,
        opened_at_unix_ms: t.opened_at_ms,
        updated_at_unix_ms: t.updated_at_ms,
        resolved_at_unix_ms: t.resolved_at_ms.unwrap_or(0),
        resolution: t.resolution.unwrap_or_default(),
        notes: found
            .notes
            .into_iter()
            .map(|n| PublicNote {
                at_unix_ms: n.at_ms,
                author: n.author,
                note: n.note,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_gets_a_burst_then_one_a_second() {
        let mut pace = Pace::default();
        let start = Instant::now();
        assert!((0..5).all(|_| pace.admit(start)));
        assert!(!pace.admit(start), "the sixth at once is refused");
        assert!(pace.admit(start + REFILL), "one more a second later");
        assert!(!pace.admit(start + REFILL));
    }

    #[test]
    fn junk_addresses_are_dropped_and_plain_ones_kept() {
        assert_eq!(reporter_email("h", ""), None);
        assert_eq!(
            reporter_email("h", "ana@example.com").as_deref(),
            Some("ana@example.com")
        );
        for junk in ["ana", "ana@example.com\r\nBcc: x@y.z", &"a".repeat(300)] {
            assert_eq!(reporter_email("h", junk), None, "{junk}");
        }
    }
}
