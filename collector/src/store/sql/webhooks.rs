//! Webhooks, the same SQL on both backends: the webhook policy rows, and
//! the deliveries of the outbox that the ticket engine writes into inside
//! the ticket change's own transaction (`engine::tickets::enqueue_change`, through
//! `TicketTx`), so an event is queued if and only if its change commits.
//! Delivery state (attempts, backoff, errors) lives on the outbox rows.

use std::future::Future;

use sqlx::{Pool, QueryBuilder, Transaction};

use super::{Dialect, SendFuture, Value, push_in, push_values};
use crate::store::{
    Delivery, DeliveryOutcome, NewWebhook, StoreError, StoreResult, TicketEvent, WebhookFormat,
    WebhookRoute, WebhookStatus,
};

/// Stores a webhook, enabled, in the transaction on `conn`; its id.
pub(crate) fn add<'a, B: Dialect>(
    conn: &'a mut B::Connection,
    hook: &'a NewWebhook,
    now_ms: i64,
) -> SendFuture<'a, i64> {
    Box::pin(async move {
        let mut sql = QueryBuilder::new(
            "INSERT INTO webhooks (url, events, secret, created_at_ms, created_by, format, \
             priorities, assignee, enabled) VALUES (",
        );
        push_values(
            &mut sql,
            &[
                Value::Text(&hook.url),
                Value::Text(&events_text(&hook.events)),
                Value::Text(&hook.secret),
                Value::Int(now_ms),
                Value::Text(&hook.created_by),
                Value::Text(hook.route.format.name()),
                Value::Text(&hook.route.priorities.join(",")),
                Value::MaybeText(hook.route.assignee.as_deref()),
            ],
        );
        sql.push(", TRUE) RETURNING id");
        B::optional_in(conn, sql, |r| r.int("id"))
            .await?
            .ok_or_else(|| StoreError::Corrupt("INSERT returned no webhook id".into()))
    })
}

/// Claims due deliveries, in the transaction `begin` opens, by pushing
/// their due time out by the lease. Only the oldest pending event of each
/// (webhook, ticket) is claimable, so a receiver sees a ticket's events in
/// order even across retries; a delivery given up on stops holding back
/// the ones after it. On SQLite the write transaction holds the one write
/// lock before it reads, so two claimers never take the same row; on
/// PostgreSQL `FOR UPDATE OF o SKIP LOCKED` makes concurrent claimers
/// (other replicas) pass over the rows one of them is claiming, and a row
/// locked by a claim still counts as pending in the others' ordering
/// check, so no replica jumps ahead of a ticket's event that another is
/// about to send.
pub(crate) fn claim<'a, B: Dialect>(
    begin: impl Future<Output = StoreResult<Transaction<'static, B>>> + Send + 'a,
    now_ms: i64,
    lease_ms: i64,
    limit: u32,
) -> SendFuture<'a, Vec<Delivery>> {
    Box::pin(async move {
        let mut tx = begin.await?;
        let mut sql = QueryBuilder::new(
            "SELECT o.id, o.delivery_id, o.event, o.body, o.attempts, o.created_at_ms, w.url, \
             w.secret, w.format, o.recipient FROM webhook_outbox o JOIN webhooks w ON w.id = o.webhook_id \
             WHERE o.state = 'pending' AND w.enabled = TRUE \
             AND NOT EXISTS (SELECT 1 FROM webhook_outbox p WHERE p.webhook_id = o.webhook_id \
               AND p.ticket_id = o.ticket_id AND p.state = 'pending' AND p.id < o.id) \
             AND o.next_attempt_at_ms <= ",
        );
        B::int(&mut sql, now_ms);
        sql.push(" ORDER BY o.next_attempt_at_ms, o.id LIMIT ");
        B::int(&mut sql, i64::from(limit));
        B::claim_rows_of(&mut sql, "o");
        let deliveries = B::all_in(&mut tx, sql, |r| {
            Ok(Delivery {
                id: r.int("id")?,
                delivery_id: r.text("delivery_id")?,
                event: r.text("event")?,
                url: r.text("url")?,
                secret: r.text("secret")?,
                body: r.text("body")?,
                attempts: u32::try_from(r.int("attempts")?).unwrap_or(u32::MAX),
                created_at_ms: r.int("created_at_ms")?,
                format: format_of(&r.text("format")?)?,
                recipient: r.opt_text("recipient")?,
            })
        })
        .await?;
        if deliveries.is_empty() {
            return Ok(deliveries);
        }
        let mut sql = QueryBuilder::new("UPDATE webhook_outbox SET next_attempt_at_ms = ");
        B::int(&mut sql, now_ms.saturating_add(lease_ms));
        sql.push(" WHERE id");
        push_in(&mut sql, deliveries.iter().map(|d| Value::Int(d.id)));
        B::execute_in(&mut tx, sql).await?;
        tx.commit().await?;
        Ok(deliveries)
    })
}

/// Records one attempt of a claimed delivery.
pub(crate) fn record<'a, B: Dialect>(
    pool: &'a Pool<B>,
    id: i64,
    outcome: &'a DeliveryOutcome,
    now_ms: i64,
) -> SendFuture<'a, ()> {
    Box::pin(async move {
        let mut sql = QueryBuilder::new(
            "UPDATE webhook_outbox SET attempts = attempts + 1, last_attempt_at_ms = ",
        );
        B::int(&mut sql, now_ms);
        match outcome {
            DeliveryOutcome::Delivered(status) => {
                sql.push(", state = 'delivered', last_error = NULL, delivered_at_ms = ");
                B::int(&mut sql, now_ms);
                sql.push(", last_status = ");
                B::int(&mut sql, i64::from(*status));
            }
            DeliveryOutcome::Failed {
                status,
                error,
                retry_at_ms,
            } => {
                sql.push(", last_status = ");
                B::value(&mut sql, Value::MaybeInt(status.map(i64::from)));
                sql.push(", last_error = ");
                B::text(&mut sql, error);
                match retry_at_ms {
                    Some(at) => {
                        sql.push(", state = 'pending', next_attempt_at_ms = ");
                        B::int(&mut sql, *at);
                    }
                    None => {
                        sql.push(", state = 'failed'");
                    }
                }
            }
        }
        sql.push(" WHERE id = ");
        B::int(&mut sql, id);
        B::execute(pool, sql).await?;
        Ok(())
    })
}

/// The events column: event names joined by commas.
pub(crate) fn events_text(events: &[TicketEvent]) -> String {
    events
        .iter()
        .map(|e| e.name())
        .collect::<Vec<_>>()
        .join(",")
}

/// The events column read back; a name this build does not know is a
/// corrupt row.
pub(crate) fn events_of(text: &str) -> StoreResult<Vec<TicketEvent>> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(StoreError::Corrupt))
        .collect()
}

/// The format column read back; a name this build does not know is a
/// corrupt row.
pub(crate) fn format_of(text: &str) -> StoreResult<WebhookFormat> {
    text.parse().map_err(StoreError::Corrupt)
}

/// The route columns read back.
pub(crate) fn route_of(
    format: &str,
    priorities: &str,
    assignee: Option<String>,
) -> StoreResult<WebhookRoute> {
    Ok(WebhookRoute {
        format: format_of(format)?,
        priorities: priorities
            .split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        assignee,
    })
}

/// Every webhook with its delivery counts; the secret is never selected.
pub(crate) fn list<B: Dialect>(
    pool: &Pool<B>,
) -> impl Future<Output = StoreResult<Vec<WebhookStatus>>> + Send + '_ {
    let sql = QueryBuilder::<B>::new(
        "SELECT w.id, w.url, w.events, w.enabled, w.created_at_ms, w.created_by, \
         w.format, w.priorities, w.assignee, \
         (SELECT MIN(o.next_attempt_at_ms) FROM webhook_outbox o WHERE o.webhook_id = w.id \
          AND o.state = 'pending') AS next_attempt, \
         (SELECT o.attempts FROM webhook_outbox o WHERE o.webhook_id = w.id \
          AND o.last_attempt_at_ms IS NOT NULL ORDER BY o.last_attempt_at_ms DESC, o.id DESC LIMIT 1) AS last_attempts, \
         (SELECT COUNT(*) FROM webhook_outbox o WHERE o.webhook_id = w.id AND o.state = 'pending') AS pending, \
         (SELECT COUNT(*) FROM webhook_outbox o WHERE o.webhook_id = w.id AND o.state = 'delivered') AS delivered, \
         (SELECT COUNT(*) FROM webhook_outbox o WHERE o.webhook_id = w.id AND o.state = 'failed') AS failed, \
         (SELECT MAX(o.last_attempt_at_ms) FROM webhook_outbox o WHERE o.webhook_id = w.id) AS last_attempt, \
         (SELECT o.last_error FROM webhook_outbox o WHERE o.webhook_id = w.id \
          AND o.last_attempt_at_ms IS NOT NULL ORDER BY o.last_attempt_at_ms DESC, o.id DESC LIMIT 1) AS last_error \
         FROM webhooks w ORDER BY w.id",
    );
    B::all(pool, sql, |r| {
        let count = |name: &str| -> StoreResult<u64> { Ok(r.int(name)?.unsigned_abs()) };
        Ok(WebhookStatus {
            id: r.int("id")?,
            url: r.text("url")?,
            events: events_of(&r.text("events")?)?,
            enabled: r.flag("enabled")?,
            created_at_ms: r.int("created_at_ms")?,
            created_by: r.text("created_by")?,
            pending: count("pending")?,
            delivered: count("delivered")?,
            failed: count("failed")?,
            last_attempt_at_ms: r.opt_int("last_attempt")?,
            last_error: r.opt_text("last_error")?,
            route: route_of(
                &r.text("format")?,
                &r.text("priorities")?,
                r.opt_text("assignee")?,
            )?,
            last_attempts: u32::try_from(r.opt_int("last_attempts")?.unwrap_or(0)).unwrap_or(0),
            next_attempt_at_ms: r.opt_int("next_attempt")?,
        })
    })
}

#[cfg(test)]
mod tests {
    use sqlx::{Sqlite, SqlitePool};

    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{SharedQueries, SqlBackend, TicketChange};

    async fn outbox_rows(pool: &SqlitePool) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM webhook_outbox")
            .fetch_one(pool)
            .await
            .expect("count")
    }

    #[tokio::test]
    async fn an_event_reaches_the_outbox_only_if_its_ticket_change_commits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("t.db"))
            .await
            .expect("open");
        store
            .add_webhook(
                &NewWebhook {
                    url: "https://h.example.com/".into(),
                    events: TicketEvent::ALL.to_vec(),
                    secret: "s".into(),
                    created_by: "admin".into(),
                    route: crate::store::WebhookRoute::default(),
                },
                &|_: &i64| crate::store::AuditEntry::system("test", "", ""),
                0,
            )
            .await
            .expect("webhook");
        sqlx::query(
            "INSERT INTO hosts (id, hostname, hardware_uuid, hardware_serial, cert_serial, \
             cert_sha256, enrolled_at_ms) VALUES ('h1', 'pc-1', '', '', '01', 'x', 0)",
        )
        .execute(store.writes())
        .await
        .expect("host");
        let ticket = store
            .create_ticket(
                "h1",
                "Spooler",
                None,
                "alice",
                &crate::store::AuditEntry::system("", "", ""),
                1,
            )
            .await
            .expect("ticket");
        assert_eq!(outbox_rows(store.reads()).await, 1, "opened, committed");

        // A change and its event in one transaction that rolls back.
        let mut tx = store.writes().begin().await.expect("begin");
        sqlx::query("UPDATE tickets SET occurrences = occurrences + 1 WHERE id = ?")
            .bind(ticket.id)
            .execute(&mut *tx)
            .await
            .expect("update");
        let mut tickets = crate::store::sql::tickets::TicketConn::<Sqlite>(&mut tx);
        let change = crate::webhooks::change::Change::system(
            crate::webhooks::change::ChangeKind::Occurrence,
            crate::webhooks::change::SYSTEM,
        );
        crate::store::engine::tickets::enqueue_change(
            &mut tickets,
            TicketEvent::Updated,
            ticket.id,
            2,
            &change,
        )
        .await
        .expect("enqueue");
        let inside: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_outbox")
            .fetch_one(&mut *tx)
            .await
            .expect("count");
        assert_eq!(inside, 2);
        tx.rollback().await.expect("rollback");
        assert_eq!(
            outbox_rows(store.reads()).await,
            1,
            "rolled back with the change"
        );

        // A ticket change that fails inside the store (an unknown status)
        // leaves no event either.
        let refused = store
            .update_ticket(
                ticket.id,
                &TicketChange::Status("bogus".into()),
                "alice",
                &crate::store::AuditEntry::system("test", "", ""),
                3,
            )
            .await
            .expect("update");
        assert!(refused.is_err());
        assert_eq!(outbox_rows(store.reads()).await, 1);
    }
}
