//! Webhooks on PostgreSQL: the webhook policy rows, and the outbox that the
//! ticket engine writes into inside the ticket change's own transaction
//! (`engine::tickets::enqueue`, through `TicketTx`), so an event is queued
//! if and only if its change commits. Delivery state (attempts, backoff,
//! errors) lives on the outbox rows. Several replicas deliver from the
//! same outbox; [`claim`] hands each due row to one of them (D21).

use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use crate::store::sql::webhooks::events_text;
use crate::store::{Delivery, DeliveryOutcome, NewWebhook, StoreResult};

/// Stores a webhook; returns its id.
pub async fn add(pool: &PgPool, hook: &NewWebhook, now_ms: i64) -> StoreResult<i64> {
    Ok(sqlx::query(
        "INSERT INTO webhooks (url, events, secret, enabled, created_at_ms, created_by) \
         VALUES ($1, $2, $3, TRUE, $4, $5) RETURNING id",
    )
    .bind(&hook.url)
    .bind(events_text(&hook.events))
    .bind(&hook.secret)
    .bind(now_ms)
    .bind(&hook.created_by)
    .fetch_one(pool)
    .await?
    .try_get("id")?)
}

/// Claims due deliveries by pushing their due time out by the lease. Only
/// the oldest pending event of each (webhook, ticket) is claimable, so a
/// receiver sees a ticket's events in order even across retries; a
/// delivery given up on stops holding back the ones after it.
/// `FOR UPDATE OF o SKIP LOCKED` makes concurrent claimers (other replicas)
/// pass over the rows one of them is claiming instead of waiting for it or
/// taking it too; a row locked by a claim still counts as pending in the
/// others' ordering check, so no replica jumps ahead of a ticket's event
/// that another is about to send.
pub async fn claim(
    pool: &PgPool,
    now_ms: i64,
    lease_ms: i64,
    limit: u32,
) -> StoreResult<Vec<Delivery>> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(
        "SELECT o.id, o.delivery_id, o.event, o.body, o.attempts, o.created_at_ms, w.url, w.secret \
         FROM webhook_outbox o JOIN webhooks w ON w.id = o.webhook_id \
         WHERE o.state = 'pending' AND o.next_attempt_at_ms <= $1 AND w.enabled \
         AND NOT EXISTS (SELECT 1 FROM webhook_outbox p WHERE p.webhook_id = o.webhook_id \
           AND p.ticket_id = o.ticket_id AND p.state = 'pending' AND p.id < o.id) \
         ORDER BY o.next_attempt_at_ms, o.id LIMIT $2 FOR UPDATE OF o SKIP LOCKED",
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
    let mut update =
        QueryBuilder::<Postgres>::new("UPDATE webhook_outbox SET next_attempt_at_ms = ");
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
    pool: &PgPool,
    id: i64,
    outcome: &DeliveryOutcome,
    now_ms: i64,
) -> StoreResult<()> {
    match outcome {
        DeliveryOutcome::Delivered(status) => {
            sqlx::query(
                "UPDATE webhook_outbox SET state = 'delivered', attempts = attempts + 1, \
                 last_attempt_at_ms = $1, delivered_at_ms = $1, last_status = $2, last_error = NULL \
                 WHERE id = $3",
            )
            .bind(now_ms)
            .bind(i64::from(*status))
            .bind(id)
            .execute(pool)
            .await?;
        }
        DeliveryOutcome::Failed {
            status,
            error,
            retry_at_ms,
        } => {
            sqlx::query(
                "UPDATE webhook_outbox SET attempts = attempts + 1, last_attempt_at_ms = $1, \
                 last_status = $2, last_error = $3, \
                 state = CASE WHEN $4 IS NULL THEN 'failed' ELSE 'pending' END, \
                 next_attempt_at_ms = COALESCE($4, next_attempt_at_ms) WHERE id = $5",
            )
            .bind(now_ms)
            .bind(status.map(i64::from))
            .bind(error)
            .bind(*retry_at_ms)
            .bind(id)
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}
