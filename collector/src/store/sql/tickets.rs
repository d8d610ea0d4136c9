//! The ticket and change-log listings, the same SQL on both backends.

use std::future::Future;

use sqlx::{Pool, QueryBuilder};

use super::Dialect;
use crate::store::rows::{TICKET_COLUMNS, ticket_row};
use crate::store::{ChangeQuery, ChangeRow, StoreResult, TicketQuery, TicketRow};

/// Tickets, by priority then resolution due time.
pub(crate) fn list<'a, B: Dialect>(
    pool: &'a Pool<B>,
    query: &TicketQuery,
) -> impl Future<Output = StoreResult<Vec<TicketRow>>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new(format!(
        "SELECT {TICKET_COLUMNS} FROM tickets t JOIN hosts h ON h.id = t.host_id WHERE 1 = 1"
    ));
    if query.open_only {
        sql.push(" AND t.status NOT IN ('resolved', 'closed')");
    }
    for (column, value) in [
        ("status", &query.status),
        ("host_id", &query.host_id),
        ("priority", &query.priority),
        ("assignee", &query.assignee),
        ("rule", &query.rule),
    ] {
        if let Some(value) = value {
            sql.push(format!(" AND t.{column} = "));
            B::text(&mut sql, value);
        }
    }
    sql.push(" ORDER BY t.priority, t.resolution_due_ms, t.id LIMIT ");
    B::int(&mut sql, i64::from(query.limit));
    B::all(pool, sql, |r| ticket_row(r))
}

/// Change-log entries, newest first.
pub(crate) fn changes<'a, B: Dialect>(
    pool: &'a Pool<B>,
    query: &ChangeQuery,
) -> impl Future<Output = StoreResult<Vec<ChangeRow>>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new(
        "SELECT c.host_id, h.hostname, c.observed_at_ms, c.section, c.item, c.old_value, c.new_value \
         FROM host_changes c JOIN hosts h ON h.id = c.host_id WHERE c.observed_at_ms >= ",
    );
    B::int(&mut sql, query.since_ms);
    if let Some(host) = &query.host_id {
        sql.push(" AND c.host_id = ");
        B::text(&mut sql, host);
    }
    if !query.sections.is_empty() {
        sql.push(" AND c.section IN (");
        for (i, section) in query.sections.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            B::text(&mut sql, section);
        }
        sql.push(")");
    }
    sql.push(" ORDER BY c.observed_at_ms DESC, c.id DESC LIMIT ");
    B::int(&mut sql, i64::from(query.limit));
    B::all(pool, sql, |r| {
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
}
