//! Webhooks on SQLite: the webhook policy rows, and the outbox that the
//! ticket engine writes into inside the ticket change's own transaction
//! (`engine::tickets::enqueue`, through `TicketTx`), so an event is queued
//! if and only if its change commits. Delivery state (attempts, backoff,
//! errors) lives on the outbox rows.

use sqlx::{QueryBuilder, Row, Sqlite};

use crate::store::sql::webhooks::events_text;
use crate::store::{Delivery, DeliveryOutcome, NewWebhook, StoreResult};

/// Stores a webhook; returns its id.
pub async fn add(writer: &super::Writer, hook: &NewWebhook, now_ms: i64) -> StoreResult<i64> {
    Ok(sqlx::query(
        "INSERT INTO webhooks (url, events, secret, enabled, created_at_ms, created_by) \
         VALUES (?, ?, ?, 1, ?, ?) RETURNING id",
    )
    .bind(&hook.url)
    .bind(events_text(&hook.events))
    .bind(&hook.secret)
    .bind(now_ms)
    .bind(&hook.created_by)
    .fetch_one(writer.pool())
    .await?
    .try_get("id")?)
}

/// Claims due deliveries by pushing their due time out by the lease. Only
/// the oldest pending event of each (webhook, ticket) is claimable, so a
/// receiver sees a ticket's events in order even across retries; a
/// delivery given up on stops holding back the ones after it.
/// BEGIN IMMEDIATE takes the write lock before reading, so two claimers
/// never take the same row (PostgreSQL will use FOR UPDATE SKIP LOCKED).
pub async fn claim(
    writer: &super::Writer,
    now_ms: i64,
    lease_ms: i64,
    limit: u32,
) -> StoreResult<Vec<Delivery>> {
    let mut tx = super::begin_write(writer).await?;
    let rows = sqlx::query(
        "SELECT o.id, o.delivery_id, o.event, o.body, o.attempts, o.created_at_ms, w.url, w.secret \
         FROM webhook_outbox o JOIN webhooks w ON w.id = o.webhook_id \
         WHERE o.state = 'pending' AND o.next_attempt_at_ms <= ? AND w.enabled = 1 \
         AND NOT EXISTS (SELECT 1 FROM webhook_outbox p WHERE p.webhook_id = o.webhook_id \
           AND p.ticket_id = o.ticket_id AND p.state = 'pending' AND p.id < o.id) \
         ORDER BY o.next_attempt_at_ms, o.id LIMIT ?",
    )
    .bind(now_ms)
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let deliveries = rows
        .iter()
        .map(|r| {
            let attempts: i64 = r.try_get("attempts")?;
            Ok(Delivery {
                id: r.try_get("id")?,
                delivery_id: r.try_get("delivery_id")?,
                event: r.try_get("event")?,
                url: r.try_get("url")?,
                secret: r.try_get("secret")?,
                body: r.try_get("body")?,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                created_at_ms: r.try_get("created_at_ms")?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let mut update = QueryBuilder::<Sqlite>::new("UPDATE webhook_outbox SET next_attempt_at_ms = ");
    update
        .push_bind(now_ms.saturating_add(lease_ms))
        .push(" WHERE id IN (");
    let mut ids = update.separated(", ");
    for d in &deliveries {
        ids.push_bind(d.id);
    }
    update.push(")");
    update.build().execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(deliveries)
}

/// Records one attempt.
pub async fn record(
    writer: &super::Writer,
    id: i64,
    outcome: &DeliveryOutcome,
    now_ms: i64,
) -> StoreResult<()> {
    match outcome {
        DeliveryOutcome::Delivered(status) => {
            sqlx::query(
                "UPDATE webhook_outbox SET state = 'delivered', attempts = attempts + 1, \
                 last_attempt_at_ms = ?1, delivered_at_ms = ?1, last_status = ?2, last_error = NULL \
                 WHERE id = ?3",
            )
            .bind(now_ms)
            .bind(i64::from(*status))
            .bind(id)
            .execute(writer.pool())
            .await?;
        }
        DeliveryOutcome::Failed {
            status,
            error,
            retry_at_ms,
        } => {
            sqlx::query(
                "UPDATE webhook_outbox SET attempts = attempts + 1, last_attempt_at_ms = ?1, \
                 last_status = ?2, last_error = ?3, \
                 state = CASE WHEN ?4 IS NULL THEN 'failed' ELSE 'pending' END, \
                 next_attempt_at_ms = COALESCE(?4, next_attempt_at_ms) WHERE id = ?5",
            )
            .bind(now_ms)
            .bind(status.map(i64::from))
            .bind(error)
            .bind(*retry_at_ms)
            .bind(id)
            .execute(writer.pool())
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::SqlitePool;

    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{SharedQueries, Store, TicketChange, TicketEvent};

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
                },
                0,
            )
            .await
            .expect("webhook");
        sqlx::query(
            "INSERT INTO hosts (id, hostname, hardware_uuid, hardware_serial, cert_serial, \
             cert_sha256, enrolled_at_ms) VALUES ('h1', 'pc-1', '', '', '01', 'x', 0)",
        )
        .execute(store.writer.pool())
        .await
        .expect("host");
        let ticket = store
            .create_ticket("h1", "Spooler", None, "alice", 1)
            .await
            .expect("ticket");
        assert_eq!(outbox_rows(&store.pool).await, 1, "opened, committed");

        // A change and its event in one transaction that rolls back.
        let mut tx = store.writer.pool().begin().await.expect("begin");
        sqlx::query("UPDATE tickets SET occurrences = occurrences + 1 WHERE id = ?")
            .bind(ticket.id)
            .execute(&mut *tx)
            .await
            .expect("update");
        let mut tickets = crate::store::sql::tickets::TicketConn::<Sqlite>(&mut tx);
        crate::store::engine::tickets::enqueue(&mut tickets, TicketEvent::Updated, ticket.id, 2)
            .await
            .expect("enqueue");
        let inside: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_outbox")
            .fetch_one(&mut *tx)
            .await
            .expect("count");
        assert_eq!(inside, 2);
        tx.rollback().await.expect("rollback");
        assert_eq!(
            outbox_rows(&store.pool).await,
            1,
            "rolled back with the change"
        );

        // A ticket change that fails inside the store (an unknown status)
        // leaves no event either.
        let refused = store
            .update_ticket(ticket.id, &TicketChange::Status("bogus".into()), "alice", 3)
            .await
            .expect("update");
        assert!(refused.is_err());
        assert_eq!(outbox_rows(&store.pool).await, 1);
    }
}
