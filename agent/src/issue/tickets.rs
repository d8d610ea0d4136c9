//! `deskpulse-agent my-tickets` (issue 23): an employee's own tickets from
//! this PC, asked of the collector over the service's live session.
//!
//! The local endpoint names the employee from the connection (D12) and
//! hands a [`TicketsAsk`] to the service loop, which owns the session: it
//! sends a `MyTicketsRequest` with a fresh id and keeps the asker's reply
//! channel in [`Pending`] until the collector's `MyTickets` answer with
//! that id comes back (or the session ends, which drops it). Without a
//! session the asker is told at once, and the endpoint shows what this
//! PC's ledger knows instead: references and ticket numbers.
//!
//! [`MyTicketsView`] is what the endpoint replies and `--json` prints;
//! [`render`] the text form. Everything the collector sends is bounded
//! again here and made printable before it reaches a terminal.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use deskpulse_proto::v1::agent_message::Kind;
use deskpulse_proto::v1::collector_message::Kind as Incoming;
use deskpulse_proto::v1::{
    AgentMessage, CollectorMessage, EmployeeTicket, MyTickets, MyTicketsRequest,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};

use super::SharedLedger;
use super::ledger::{Known, Ledger, short_reference};

/// How long the endpoint waits for the collector's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `report-issue` waits for the ticket number once the report is
/// on its way.
pub const TICKET_WAIT: Duration = Duration::from_secs(5);
/// Requests waiting for the collector at once; more are refused.
const MAX_PENDING: usize = 16;
/// Tickets and notes shown at most, whatever a collector sends.
const MAX_TICKETS: usize = 50;
const MAX_NOTES: usize = 10;
/// The longest text shown, in characters.
const MAX_TEXT: usize = 2000;

/// The line an employee reads when the service cannot reach the collector.
pub const NOT_CONNECTED: &str =
    "the agent is not connected to the help desk right now; showing what this PC knows";

/// An employee's request, from the local endpoint to the service loop.
#[derive(Debug)]
pub struct TicketsAsk {
    /// Who asks, named from the connection.
    pub os_user: String,
    /// The collector's answer, or why there is none (one line).
    pub reply: oneshot::Sender<Result<MyTickets, String>>,
}

/// What the service loop holds of the employee's side: the ledger the
/// tickets of acknowledged reports go into, whom to wake when one does,
/// and the `my-tickets` requests from the local endpoint.
#[derive(Debug)]
pub struct Employees {
    /// The per-user ledger, shared with the endpoint.
    pub ledger: SharedLedger,
    /// Woken when a ticket number is recorded.
    pub recorded: Arc<Notify>,
    /// Requests from the local endpoint.
    pub asks: mpsc::Receiver<TicketsAsk>,
    /// Requests sent and waiting for the collector.
    pub pending: Pending,
}

impl Employees {
    /// Records the ticket an acknowledged employee report names, and wakes
    /// the endpoint's waiters.
    pub fn acknowledged(&self, message: &CollectorMessage) {
        if record_reported(&mut super::lock(&self.ledger), message) {
            self.recorded.notify_waiters();
        }
    }
}

/// Records in `ledger` the ticket `message` names, if it is an `Ack` of an
/// employee report this ledger knows; true when the number is new.
pub fn record_reported(ledger: &mut Ledger, message: &CollectorMessage) -> bool {
    match &message.kind {
        Some(Incoming::Ack(ack)) => ack
            .reported
            .as_ref()
            .is_some_and(|r| r.ticket_id > 0 && ledger.record_ticket(&r.report_key, r.ticket_id)),
        _ => false,
    }
}

/// The service loop's side: the requests sent and waiting for answers.
#[derive(Debug, Default)]
pub struct Pending {
    next_id: u64,
    waiting: HashMap<u64, oneshot::Sender<Result<MyTickets, String>>>,
}

impl Pending {
    /// Sends `ask` over the session's queue `tx`, or answers it at once
    /// when the queue is full or too many wait. Never blocks the loop.
    pub fn send(&mut self, tx: &mpsc::Sender<AgentMessage>, ask: TicketsAsk) {
        self.waiting.retain(|_, reply| !reply.is_closed());
        if self.waiting.len() >= MAX_PENDING {
            let _ = ask.reply.send(Err(
                "the agent is busy with other requests; try again".into()
            ));
            return;
        }
        self.next_id = self.next_id.wrapping_add(1);
        let request_id = self.next_id;
        let message = AgentMessage {
            kind: Some(Kind::MyTickets(MyTicketsRequest {
                request_id,
                os_user: ask.os_user,
            })),
        };
        if tx.try_send(message).is_err() {
            let _ = ask
                .reply
                .send(Err("the agent is busy sending reports; try again".into()));
            return;
        }
        self.waiting.insert(request_id, ask.reply);
    }

    /// Hands the collector's answer to the request it names; an answer to
    /// nothing asked is dropped.
    pub fn answered(&mut self, answer: MyTickets) {
        if let Some(reply) = self.waiting.remove(&answer.request_id) {
            let _ = reply.send(Ok(answer));
        }
    }

    /// Forgets every waiting request (the session ended): each asker
    /// learns at once that no answer comes.
    pub fn clear(&mut self) {
        self.waiting.clear();
    }
}

/// One ticket as the employee sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketView {
    /// The ticket number.
    pub id: i64,
    /// The title.
    pub title: String,
    /// What the employee wrote.
    pub text: String,
    /// new, open, in_progress, waiting, resolved, closed.
    pub status: String,
    /// "P1" … "P4".
    pub priority: String,
    /// RFC 3339 UTC times.
    pub opened_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// When it resolved, if it did.
    pub resolved_at: Option<String>,
    /// How it was resolved, if it was.
    pub resolution: Option<String>,
    /// The technicians' public notes, oldest first.
    pub notes: Vec<NoteView>,
}

/// A public note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteView {
    /// When, RFC 3339 UTC.
    pub at: String,
    /// The technician.
    pub author: String,
    /// The note.
    pub note: String,
}

/// A report this PC remembers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownView {
    /// Its reference, as `report-issue` showed it.
    pub reference: String,
    /// When it was reported, RFC 3339 UTC.
    pub reported_at: String,
    /// Its ticket number, once the collector said it.
    pub ticket: Option<i64>,
}

/// `my-tickets`' answer, from the service to the command and in `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MyTicketsView {
    /// Whose tickets these are (named from the connection).
    pub os_user: String,
    /// Whether the collector answered; when false, `tickets` is empty and
    /// `known` is what this PC remembers.
    pub connected: bool,
    /// Why the collector did not answer, one line; absent when it did.
    pub note: Option<String>,
    /// The tickets, newest first.
    pub tickets: Vec<TicketView>,
    /// More tickets exist than are shown.
    pub truncated: bool,
    /// The reports this PC remembers, newest first (only when not
    /// connected).
    pub known: Vec<KnownView>,
}

impl MyTicketsView {
    /// The collector's answer for `os_user`.
    pub fn answered(os_user: String, answer: MyTickets) -> Self {
        let truncated = answer.truncated || answer.tickets.len() > MAX_TICKETS;
        Self {
            os_user,
            connected: true,
            note: None,
            tickets: answer
                .tickets
                .into_iter()
                .take(MAX_TICKETS)
                .map(ticket_view)
                .collect(),
            truncated,
            known: Vec::new(),
        }
    }

    /// No answer (`why`): what the ledger knows of `os_user`'s reports.
    pub fn offline(os_user: String, why: String, known: Vec<Known>) -> Self {
        Self {
            os_user,
            connected: false,
            note: Some(why),
            tickets: Vec::new(),
            truncated: false,
            known: known
                .into_iter()
                .map(|k| KnownView {
                    reference: short_reference(&k.reference).to_owned(),
                    reported_at: rfc3339(k.at_ms),
                    ticket: k.ticket,
                })
                .collect(),
        }
    }
}

fn ticket_view(t: EmployeeTicket) -> TicketView {
    let nonempty = |text: String| (!text.is_empty()).then(|| printable(&text));
    let skip = t.notes.len().saturating_sub(MAX_NOTES);
    TicketView {
        id: t.id,
        title: printable(&t.title),
        text: printable(&t.text),
        status: printable(&t.status),
        priority: printable(&t.priority),
        opened_at: rfc3339(t.opened_at_unix_ms),
        updated_at: rfc3339(t.updated_at_unix_ms),
        resolved_at: (t.resolved_at_unix_ms > 0).then(|| rfc3339(t.resolved_at_unix_ms)),
        resolution: nonempty(t.resolution),
        notes: t
            .notes
            .into_iter()
            .skip(skip)
            .map(|n| NoteView {
                at: rfc3339(n.at_unix_ms),
                author: printable(&n.author),
                note: printable(&n.note),
            })
            .collect(),
    }
}

/// `text` bounded to [`MAX_TEXT`] characters, with control characters
/// other than newline and tab shown as U+FFFD: a collector's text cannot
/// move the employee's cursor or retitle their terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .take(MAX_TEXT)
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// An RFC 3339 UTC time, to the second.
pub fn rfc3339(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The text form: each ticket with its status, times, resolution and
/// public notes; or, offline, the line saying so and the references.
pub fn render(view: &MyTicketsView) -> String {
    let mut out = String::new();
    if !view.connected {
        out.push_str(view.note.as_deref().unwrap_or(NOT_CONNECTED));
        out.push('\n');
        if view.known.is_empty() {
            out.push_str("This PC has no recent reports of yours.\n");
        }
        for known in &view.known {
            let ticket = known.ticket.map_or_else(
                || "ticket number not known yet".to_owned(),
                |t| format!("ticket #{t}"),
            );
            out.push_str(&format!(
                "reported {} (reference {}): {ticket}\n",
                known.reported_at, known.reference
            ));
        }
        return out;
    }
    if view.tickets.is_empty() {
        out.push_str("You have no tickets from this PC.\n");
        return out;
    }
    for (n, t) in view.tickets.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "Ticket #{} [{}, {}] {}\n",
            t.id, t.status, t.priority, t.title
        ));
        if !t.text.is_empty() {
            out.push_str(&format!("  you wrote: {}\n", indent(&t.text)));
        }
        out.push_str(&format!(
            "  opened {}, updated {}",
            t.opened_at, t.updated_at
        ));
        if let Some(resolved) = &t.resolved_at {
            out.push_str(&format!(", resolved {resolved}"));
        }
        out.push('\n');
        if let Some(resolution) = &t.resolution {
            out.push_str(&format!("  resolution: {}\n", indent(resolution)));
        }
        for note in &t.notes {
            out.push_str(&format!(
                "  {} {}: {}\n",
                note.at,
                note.author,
                indent(&note.note)
            ));
        }
    }
    if view.truncated {
        out.push_str("\n(older tickets are not shown)\n");
    }
    out
}

fn indent(text: &str) -> String {
    text.replace('\n', "\n    ")
}

#[cfg(test)]
mod tests {
    use deskpulse_proto::v1::PublicNote;

    use super::*;

    fn answer(tickets: usize, notes: usize) -> MyTickets {
        MyTickets {
            request_id: 1,
            tickets: (0..tickets)
                .map(|n| EmployeeTicket {
                    id: n as i64 + 1,
                    title: "reported by ana: printer\u{1b}]0;owned\u{7}".into(),
                    status: "resolved".into(),
                    priority: "P3".into(),
                    opened_at_unix_ms: 1_780_000_000_000,
                    updated_at_unix_ms: 1_780_000_060_000,
                    resolved_at_unix_ms: 1_780_000_060_000,
                    resolution: "replaced the toner".into(),
                    notes: (0..notes)
                        .map(|m| PublicNote {
                            at_unix_ms: 1_780_000_030_000,
                            author: "bo".into(),
                            note: format!("note {m}"),
                        })
                        .collect(),
                    ..EmployeeTicket::default()
                })
                .collect(),
            ..MyTickets::default()
        }
    }

    #[test]
    fn an_answer_is_bounded_and_printable() {
        let view = MyTicketsView::answered("ana".into(), answer(MAX_TICKETS + 5, MAX_NOTES + 3));
        assert_eq!(view.tickets.len(), MAX_TICKETS);
        assert!(view.truncated);
        let first = &view.tickets[0];
        assert_eq!(first.notes.len(), MAX_NOTES);
        assert_eq!(first.notes.last().map(|n| n.note.as_str()), Some("note 12"));
        assert!(!first.title.contains('\u{1b}'), "{}", first.title);
        let text = render(&view);
        assert!(text.starts_with("Ticket #1 [resolved, P3]"), "{text}");
        assert!(text.contains("resolution: replaced the toner"), "{text}");
        assert!(text.contains("(older tickets are not shown)"), "{text}");
    }

    #[test]
    fn offline_shows_the_references_and_numbers_this_pc_knows() {
        let known = vec![
            Known {
                reference: "0a1b2c3d-0000-4000-8000-000000000000".into(),
                at_ms: 1_780_000_000_000,
                ticket: Some(42),
            },
            Known {
                reference: "ffffeeee-0000-4000-8000-000000000000".into(),
                at_ms: 1_780_000_000_000,
                ticket: None,
            },
        ];
        let view = MyTicketsView::offline("ana".into(), NOT_CONNECTED.into(), known);
        let text = render(&view);
        assert!(text.starts_with(NOT_CONNECTED), "{text}");
        assert!(text.contains("(reference 0a1b2c3d): ticket #42"), "{text}");
        assert!(
            text.contains("(reference ffffeeee): ticket number not known yet"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn answers_reach_their_askers_and_a_lost_session_answers_the_rest() {
        let (tx, mut rx) = mpsc::channel(4);
        let mut pending = Pending::default();
        let (reply, first) = oneshot::channel();
        pending.send(
            &tx,
            TicketsAsk {
                os_user: "ana".into(),
                reply,
            },
        );
        let (reply, second) = oneshot::channel();
        pending.send(
            &tx,
            TicketsAsk {
                os_user: "bo".into(),
                reply,
            },
        );
        let Some(AgentMessage {
            kind: Some(Kind::MyTickets(sent)),
        }) = rx.recv().await
        else {
            panic!("a request");
        };
        assert_eq!(sent.os_user, "ana");
        pending.answered(MyTickets {
            request_id: 99,
            ..MyTickets::default()
        });
        pending.answered(MyTickets {
            request_id: sent.request_id,
            ..MyTickets::default()
        });
        assert!(matches!(first.await, Ok(Ok(_))));
        pending.clear();
        assert!(second.await.is_err(), "dropped with the session");
    }
}
