//! The JSON body of a problem event (`problem.opened`, `problem.updated`,
//! `problem.resolved`; issue 23), documented in `docs/webhooks.md`. Built
//! by the problem engine in the transaction of the change, like a ticket's.

use serde::Serialize;

use super::format::rfc3339;
use crate::model::TicketEvent;
use crate::rules::problems::ProblemRow;

/// A problem as a webhook's body shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProblemPayload {
    /// The problem id.
    pub id: i64,
    /// `rule` or `report`.
    pub kind: String,
    /// The rule's name, or the report's normalised text.
    pub key: String,
    /// The title.
    pub title: String,
    /// `open` or `resolved`.
    pub status: String,
    /// "P1" … "P4", from its hosts and their criticality.
    pub priority: String,
    /// How many hosts its tickets are on.
    pub hosts: i64,
    /// How many tickets it links.
    pub tickets: i64,
    /// How many of them are open.
    pub open_tickets: i64,
    /// RFC 3339 times.
    pub opened_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// When it resolved.
    pub resolved_at: Option<String>,
    /// Who resolved it (`system` when its last ticket did).
    pub resolved_by: Option<String>,
    /// How.
    pub resolution: Option<String>,
}

impl ProblemPayload {
    /// The payload of a stored problem.
    pub fn of(row: &ProblemRow) -> Self {
        Self {
            id: row.id,
            kind: row.kind.clone(),
            key: row.key.clone(),
            title: row.title.clone(),
            status: row.status.clone(),
            priority: row.priority.clone(),
            hosts: row.hosts,
            tickets: row.tickets,
            open_tickets: row.open_tickets,
            opened_at: rfc3339(row.opened_at_ms),
            updated_at: rfc3339(row.updated_at_ms),
            resolved_at: row.resolved_at_ms.map(rfc3339),
            resolved_by: row.resolved_by.clone(),
            resolution: row.resolution.clone(),
        }
    }
}

#[derive(Serialize)]
struct Payload<'a> {
    event: &'static str,
    delivery_id: &'a str,
    occurred_at: String,
    problem: &'a ProblemPayload,
}

/// The JSON body of one delivery of a problem event.
pub fn payload(
    event: TicketEvent,
    delivery_id: &str,
    occurred_at_ms: i64,
    problem: &ProblemPayload,
) -> String {
    let body = Payload {
        event: event.name(),
        delivery_id,
        occurred_at: rfc3339(occurred_at_ms),
        problem,
    };
    // Serialising plain strings and numbers cannot fail.
    serde_json::to_string(&body).unwrap_or_default()
}
