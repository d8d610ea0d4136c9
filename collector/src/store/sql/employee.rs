//! The employee's side of tickets (issue 23), in SQL written once: public
//! worklog notes ([`EmployeeTx`] for the ticket engine), who reported each
//! employee ticket and the ticket a report key raised (written in the
//! ingest transaction by [`record_user_report`]), and the reads the agent
//! session answers from ([`EmployeeQueries`]): the ticket of a report key,
//! for its `Ack`, and a reporter's own tickets on their own host with the
//! public notes only, for `my-tickets`. Every read is scoped by host and
//! bounded in count and size; no private note is ever selected.

use async_trait::async_trait;
use sqlx::QueryBuilder;

use super::tickets::{BackendSql, TicketConn};
use super::{Dialect, Value, push_in, push_values};
use crate::store::engine::employee::EmployeeTx;
use crate::store::rows::{TICKET_COLUMNS, ticket_row};
use crate::store::{SqlBackend, StoreResult, TicketRow, WorklogEntry};

/// The most tickets one `my-tickets` answer carries.
pub const MAX_REPORTER_TICKETS: u32 = 50;
/// The most public notes shown per ticket (the latest).
pub const MAX_PUBLIC_NOTES: usize = 10;
/// The longest text (a report, a note, a resolution) an employee's answer
/// carries, in characters; longer ones are cut with "…".
pub const MAX_EMPLOYEE_TEXT: usize = 2000;

/// One of a reporter's tickets, as the employee may see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReporterTicket {
    /// The ticket.
    pub ticket: TicketRow,
    /// What the employee wrote (the evidence's `text`), cut to
    /// [`MAX_EMPLOYEE_TEXT`].
    pub text: String,
    /// Its public notes, oldest first, the latest [`MAX_PUBLIC_NOTES`].
    pub notes: Vec<WorklogEntry>,
}

/// A reporter's tickets, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReporterTickets {
    /// At most the limit asked for.
    pub tickets: Vec<ReporterTicket>,
    /// More exist than were returned.
    pub truncated: bool,
}

/// The store calls of the employee's side, written once for both backends.
#[async_trait]
pub trait EmployeeQueries: Send + Sync {
    /// The ticket the employee report `report_key` from `host_id` opened
    /// or was counted on, when the collector has it.
    async fn ticket_for_report(&self, host_id: &str, report_key: &str) -> StoreResult<Option<i64>>;

    /// The tickets `os_user` reported from `host_id`, newest first, at most
    /// `limit` (capped at [`MAX_REPORTER_TICKETS`]), each with its public
    /// notes only.
    async fn reporter_tickets(
        &self,
        host_id: &str,
        os_user: &str,
        limit: u32,
    ) -> StoreResult<ReporterTickets>;
}

#[async_trait]
impl<T: SqlBackend> EmployeeQueries for T {
    async fn ticket_for_report(&self, host_id: &str, report_key: &str) -> StoreResult<Option<i64>> {
        let mut sql = QueryBuilder::<T::Db>::new(
            "SELECT ticket_id FROM user_report_keys WHERE ticket_id IS NOT NULL AND host_id = ",
        );
        T::Db::text(&mut sql, host_id);
        sql.push(" AND report_key = ");
        T::Db::text(&mut sql, report_key);
        T::Db::optional(self.reads(), sql, |r| r.int("ticket_id")).await
    }

    async fn reporter_tickets(
        &self,
        host_id: &str,
        os_user: &str,
        limit: u32,
    ) -> StoreResult<ReporterTickets> {
        let limit = limit.clamp(1, MAX_REPORTER_TICKETS);
        let mut sql = QueryBuilder::<T::Db>::new(format!(
            "SELECT {TICKET_COLUMNS} FROM ticket_reporters r \
             JOIN tickets t ON t.id = r.ticket_id JOIN hosts h ON h.id = t.host_id \
             WHERE r.host_id = "
        ));
        T::Db::text(&mut sql, host_id);
        // The ticket must still be the host's own: a report counted on a
        // ticket that later moved (a re-link merge moves both rows) never
        // shows another host's ticket.
        sql.push(" AND t.host_id = ");
        T::Db::text(&mut sql, host_id);
        sql.push(" AND r.os_user = ");
        T::Db::text(&mut sql, os_user);
        sql.push(" ORDER BY t.opened_at_ms DESC, t.id DESC LIMIT ");
        T::Db::int(&mut sql, i64::from(limit) + 1);
        let mut rows = T::Db::all(self.reads(), sql, |r| ticket_row(r)).await?;
        let truncated = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        if rows.is_empty() {
            return Ok(ReporterTickets::default());
        }
        let mut sql = QueryBuilder::<T::Db>::new(
            "SELECT ticket_id, at_ms, author, note FROM ticket_worklog WHERE is_public = ",
        );
        T::Db::flag(&mut sql, true);
        sql.push(" AND ticket_id");
        push_in(&mut sql, rows.iter().map(|t| Value::Int(t.id)));
        sql.push(" ORDER BY ticket_id, at_ms DESC, id DESC");
        let notes = T::Db::all(self.reads(), sql, |r| {
            Ok((
                r.int("ticket_id")?,
                WorklogEntry {
                    at_ms: r.int("at_ms")?,
                    author: r.text("author")?,
                    note: r.text("note")?,
                    public: true,
                },
            ))
        })
        .await?;
        let tickets = rows
            .into_iter()
            .map(|ticket| {
                let mut own: Vec<WorklogEntry> = notes
                    .iter()
                    .filter(|(id, _)| *id == ticket.id)
                    .take(MAX_PUBLIC_NOTES)
                    .map(|(_, note)| WorklogEntry {
                        note: cut(&note.note),
                        ..note.clone()
                    })
                    .collect();
                own.reverse();
                let text = serde_json::from_str::<serde_json::Value>(&ticket.evidence)
                    .ok()
                    .and_then(|e| e.get("text").and_then(|t| t.as_str()).map(cut))
                    .unwrap_or_default();
                ReporterTicket {
                    ticket: TicketRow {
                        resolution: ticket.resolution.as_deref().map(cut),
                        ..ticket
                    },
                    text,
                    notes: own,
                }
            })
            .collect();
        Ok(ReporterTickets { tickets, truncated })
    }
}

/// `text` cut to [`MAX_EMPLOYEE_TEXT`] characters, "…" marking a cut.
fn cut(text: &str) -> String {
    if text.chars().count() <= MAX_EMPLOYEE_TEXT {
        return text.to_owned();
    }
    let mut kept: String = text.chars().take(MAX_EMPLOYEE_TEXT - 1).collect();
    kept.push('…');
    kept
}

impl<B: BackendSql> EmployeeTx for TicketConn<'_, B> {
    async fn public_worklog(
        &mut self,
        ticket: i64,
        at_ms: i64,
        author: &str,
        note: &str,
    ) -> StoreResult<()> {
        super::tickets::insert_worklog::<B>(self.0, ticket, at_ms, author, note, true).await
    }
}

/// Records, in the ingest transaction on `conn`, what an employee's report
/// did: `os_user` reported `ticket` from `host` (a repeat of the same text
/// by another user of the PC adds that user), the ticket its `report_key`
/// raised (for the report's `Ack`), and the reporter's e-mail address in
/// the ticket's evidence (`reporter_email`) when it has none yet. The
/// address was checked at the session.
#[allow(clippy::too_many_arguments)] // the report's own fields; a struct would only rename them
pub(crate) async fn record_user_report<B: BackendSql>(
    conn: &mut B::Connection,
    host: &str,
    report_key: Option<&str>,
    ticket: i64,
    os_user: &str,
    reporter_email: Option<&str>,
    at_ms: i64,
) -> StoreResult<()> {
    if let Some(key) = report_key {
        let mut sql = QueryBuilder::<B>::new("UPDATE user_report_keys SET ticket_id = ");
        B::int(&mut sql, ticket);
        sql.push(" WHERE host_id = ");
        B::text(&mut sql, host);
        sql.push(" AND report_key = ");
        B::text(&mut sql, key);
        B::execute_in(&mut *conn, sql).await?;
    }
    let mut sql = QueryBuilder::<B>::new(
        "INSERT INTO ticket_reporters (ticket_id, host_id, os_user, reported_at_ms) VALUES (",
    );
    push_values(
        &mut sql,
        &[
            Value::Int(ticket),
            Value::Text(host),
            Value::Text(os_user),
            Value::Int(at_ms),
        ],
    );
    sql.push(") ON CONFLICT (ticket_id, os_user) DO NOTHING");
    B::execute_in(&mut *conn, sql).await?;
    let Some(email) = reporter_email else {
        return Ok(());
    };
    let mut sql = QueryBuilder::<B>::new("SELECT evidence FROM tickets WHERE id = ");
    B::int(&mut sql, ticket);
    let Some(evidence) = B::optional_in(&mut *conn, sql, |r| r.text("evidence")).await? else {
        return Ok(());
    };
    let Ok(serde_json::Value::Object(mut evidence)) = serde_json::from_str(&evidence) else {
        return Ok(());
    };
    if evidence.contains_key("reporter_email") {
        return Ok(());
    }
    evidence.insert("reporter_email".into(), email.into());
    let mut sql = QueryBuilder::<B>::new("UPDATE tickets SET evidence = ");
    B::text(&mut sql, &serde_json::Value::Object(evidence).to_string());
    sql.push(" WHERE id = ");
    B::int(&mut sql, ticket);
    B::execute_in(&mut *conn, sql).await?;
    Ok(())
}
