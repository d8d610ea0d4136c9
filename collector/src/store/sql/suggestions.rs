//! Suggested fixes and change correlation (issue 23), the same SQL on both
//! backends: the knowledge-base reads and suggestion rows of
//! [`SuggestTx`] inside the transaction that opens a ticket, and the reads
//! `ticket show` and the web console's ticket page make (a ticket's stored
//! suggestions; its host's changes before it fired, each with the count of
//! other hosts that made the same change and have the same rule's ticket
//! open). What differs is [`KbSql`]'s: how the full-text index is matched
//! and ranked, and how notes are joined.

use sqlx::{Pool, QueryBuilder};

use super::tickets::{BackendSql, TicketConn};
use super::{Dialect, SendFuture, Value, push_values};
use crate::store::engine::suggestions::SuggestTx;
use crate::store::rows::Columns;
use crate::store::{AUTO_RESOLUTION, ChangeRow, StoreResult, TicketRow};
use crate::suggest::{
    CORRELATED_CHANGES, CORRELATION_WINDOW_MS, Candidate, CorrelatedChange, Suggestion,
};

/// The full-text side of the knowledge-base lookup, which each backend
/// writes in its own `kb.rs`.
pub(crate) trait KbSql: Dialect {
    /// An expression of the ticket `t`'s technician notes, joined.
    const NOTES: &'static str;
    /// The rank of a full-text match, lower is better, as a float8.
    const TEXT_RANK: &'static str;
    /// Appends `FROM` the full-text index matching `terms` (each a quoted
    /// phrase), joined to its tickets `t` and their hosts `h`, and a
    /// `WHERE` clause that the caller continues with `AND`.
    fn push_text_match(query: &mut QueryBuilder<Self>, terms: &[String]);
}

/// A ticket a technician resolved: by the same words as the partial index
/// `tickets_resolved_by_rule` (migration 0026), so that SQLite uses it.
fn human_resolution() -> String {
    format!(
        "t.status IN ('resolved', 'closed') AND t.resolution IS NOT NULL \
         AND t.resolution NOT IN ('', '{AUTO_RESOLUTION}')"
    )
}

/// The columns a [`Candidate`] is read from, but its rank.
fn candidate_columns<B: KbSql>() -> String {
    format!(
        "t.id, h.hostname, t.title, t.rule, t.subject, t.resolution, t.resolved_at_ms, \
         COALESCE({}, '') AS notes",
        B::NOTES
    )
}

fn candidate(r: &dyn Columns, text_rank: Option<f64>) -> StoreResult<Candidate> {
    Ok(Candidate {
        ticket_id: r.int("id")?,
        hostname: r.text("hostname")?,
        title: r.text("title")?,
        rule: r.text("rule")?,
        subject: r.text("subject")?,
        resolution: r.text("resolution")?,
        notes: r.text("notes")?,
        resolved_at_ms: r.opt_int("resolved_at_ms")?,
        text_rank,
    })
}

fn suggestion(r: &dyn Columns) -> StoreResult<Suggestion> {
    Ok(Suggestion {
        ticket_id: r.int("suggested_ticket_id")?,
        hostname: r.text("hostname")?,
        title: r.text("title")?,
        rule: r.text("rule")?,
        resolution: r.text("resolution")?,
        resolved_at_ms: r.opt_int("resolved_at_ms")?,
        score: r.double("score")?,
        reason: r.text("reason")?,
    })
}

/// `SELECT` a ticket's stored suggestions, best first.
fn select_suggestions<B: Dialect>(ticket: i64) -> QueryBuilder<B> {
    let mut sql = QueryBuilder::new(
        "SELECT suggested_ticket_id, hostname, title, rule, resolution, resolved_at_ms, score, \
         reason FROM ticket_suggestions WHERE ticket_id = ",
    );
    B::int(&mut sql, ticket);
    sql.push(" ORDER BY position");
    sql
}

/// Appends the `SELECT` of [`SuggestTx::text_matches`]; apart, so that a
/// test can read its plan.
pub(crate) fn push_text_matches<B: KbSql>(sql: &mut QueryBuilder<B>, terms: &[String], limit: u32) {
    sql.push(format!(
        "SELECT {}, {} AS rank ",
        candidate_columns::<B>(),
        B::TEXT_RANK
    ));
    B::push_text_match(sql, terms);
    sql.push(format!(
        " AND {} ORDER BY rank, t.id DESC LIMIT ",
        human_resolution()
    ));
    B::int(sql, i64::from(limit));
}

impl<B: BackendSql> SuggestTx for TicketConn<'_, B> {
    async fn resolved_of_rule(&mut self, rule: &str, limit: u32) -> StoreResult<Vec<Candidate>> {
        let mut sql = QueryBuilder::new(format!(
            "SELECT {} FROM tickets t JOIN hosts h ON h.id = t.host_id WHERE {} AND t.rule = ",
            candidate_columns::<B>(),
            human_resolution()
        ));
        B::text(&mut sql, rule);
        sql.push(" ORDER BY t.resolved_at_ms DESC LIMIT ");
        B::int(&mut sql, i64::from(limit));
        B::all_in(self.0, sql, |r| candidate(r, None)).await
    }

    async fn text_matches(&mut self, terms: &[String], limit: u32) -> StoreResult<Vec<Candidate>> {
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = QueryBuilder::new("");
        push_text_matches(&mut sql, terms, limit);
        B::all_in(self.0, sql, |r| {
            let rank = r.double("rank")?;
            candidate(r, Some(rank))
        })
        .await
    }

    async fn save_suggestions(
        &mut self,
        ticket: i64,
        suggestions: &[Suggestion],
    ) -> StoreResult<()> {
        if suggestions.is_empty() {
            return Ok(());
        }
        let mut sql = QueryBuilder::new(
            "INSERT INTO ticket_suggestions (ticket_id, position, suggested_ticket_id, hostname, \
             title, rule, resolution, resolved_at_ms, score, reason) VALUES ",
        );
        for (position, s) in suggestions.iter().enumerate() {
            if position > 0 {
                sql.push(", ");
            }
            sql.push("(");
            push_values(
                &mut sql,
                &[
                    Value::Int(ticket),
                    Value::Int(i64::try_from(position).unwrap_or(i64::MAX)),
                    Value::Int(s.ticket_id),
                    Value::Text(&s.hostname),
                    Value::Text(&s.title),
                    Value::Text(&s.rule),
                    Value::Text(&s.resolution),
                    Value::MaybeInt(s.resolved_at_ms),
                ],
            );
            sql.push(", ");
            B::real(&mut sql, s.score);
            sql.push(", ");
            B::text(&mut sql, &s.reason);
            sql.push(")");
        }
        B::execute_in(self.0, sql).await?;
        Ok(())
    }

    async fn suggestions_of(&mut self, ticket: i64) -> StoreResult<Vec<Suggestion>> {
        B::all_in(self.0, select_suggestions::<B>(ticket), suggestion).await
    }
}

/// A ticket's stored suggestions, best first.
pub(crate) fn suggestions<B: Dialect>(
    pool: &Pool<B>,
    ticket: i64,
) -> SendFuture<'_, Vec<Suggestion>> {
    Box::pin(async move { B::all(pool, select_suggestions::<B>(ticket), suggestion).await })
}

/// The open statuses, by the same words as the partial index
/// `tickets_open_by_rule` (migration 0026).
const OPEN: &str = "t.status IN ('new', 'open', 'in_progress', 'waiting')";

/// The changes on `ticket`'s host in the [`CORRELATION_WINDOW_MS`] before
/// it opened, newest first, each with the number of other hosts that made
/// the same change and have a ticket of the same rule open. One indexed
/// read of the host's changes, then one count per change, driven by the
/// rule's open tickets (`tickets_open_by_rule`) and checked against each
/// one's host by `host_changes_by_item`.
pub(crate) fn correlation<'a, B: Dialect>(
    pool: &'a Pool<B>,
    ticket: &'a TicketRow,
) -> SendFuture<'a, Vec<CorrelatedChange>> {
    Box::pin(async move {
        let mut sql = QueryBuilder::<B>::new(
            "SELECT c.host_id, h.hostname, c.observed_at_ms, c.section, c.item, c.old_value, \
             c.new_value FROM host_changes c JOIN hosts h ON h.id = c.host_id \
             WHERE c.item <> 'baseline' AND c.host_id = ",
        );
        B::text(&mut sql, &ticket.host_id);
        sql.push(" AND c.observed_at_ms >= ");
        B::int(
            &mut sql,
            ticket.opened_at_ms.saturating_sub(CORRELATION_WINDOW_MS),
        );
        sql.push(" AND c.observed_at_ms <= ");
        B::int(&mut sql, ticket.opened_at_ms);
        sql.push(" ORDER BY c.observed_at_ms DESC, c.id DESC LIMIT ");
        B::int(&mut sql, i64::from(CORRELATED_CHANGES));
        let changes = B::all(pool, sql, |r| {
            Ok(ChangeRow {
                host_id: r.text("host_id")?,
                hostname: r.text("hostname")?,
                observed_at_ms: r.int("observed_at_ms")?,
                section: r.text("section")?,
                item: r.text("item")?,
                old_value: r.opt_text("old_value")?,
                new_value: r.opt_text("new_value")?,
            })
        })
        .await?;
        let mut out = Vec::with_capacity(changes.len());
        for change in changes {
            let other_hosts = if ticket.rule.is_empty() {
                None
            } else {
                Some(other_hosts::<B>(pool, ticket, &change).await?)
            };
            out.push(CorrelatedChange {
                change,
                other_hosts,
            });
        }
        Ok(out)
    })
}

/// How many hosts but `ticket`'s have a ticket of its rule open and made
/// `change` (same section, item and new value; both an addition, or both
/// not).
async fn other_hosts<B: Dialect>(
    pool: &Pool<B>,
    ticket: &TicketRow,
    change: &ChangeRow,
) -> StoreResult<u64> {
    let mut sql = QueryBuilder::<B>::new(format!(
        "SELECT COUNT(DISTINCT t.host_id) AS n FROM tickets t WHERE {OPEN} AND t.rule = "
    ));
    B::text(&mut sql, &ticket.rule);
    sql.push(" AND t.host_id <> ");
    B::text(&mut sql, &ticket.host_id);
    sql.push(" AND EXISTS (SELECT 1 FROM host_changes c WHERE c.host_id = t.host_id AND c.item = ");
    B::text(&mut sql, &change.item);
    match &change.new_value {
        Some(value) => {
            sql.push(" AND c.new_value = ");
            B::text(&mut sql, value);
        }
        None => {
            sql.push(" AND c.new_value IS NULL");
        }
    }
    sql.push(" AND c.section = ");
    B::text(&mut sql, &change.section);
    sql.push(if change.old_value.is_some() {
        " AND c.old_value IS NOT NULL)"
    } else {
        " AND c.old_value IS NULL)"
    });
    let n = B::optional(pool, sql, |r| r.int("n")).await?;
    Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
}
