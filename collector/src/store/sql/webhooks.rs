//! The webhook listing and the events column's text form, the same on both
//! backends.

use std::future::Future;

use sqlx::{Pool, QueryBuilder};

use super::Dialect;
use crate::store::{StoreError, StoreResult, TicketEvent, WebhookStatus};

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

/// Every webhook with its delivery counts; the secret is never selected.
pub(crate) fn list<B: Dialect>(
    pool: &Pool<B>,
) -> impl Future<Output = StoreResult<Vec<WebhookStatus>>> + Send + '_ {
    let sql = QueryBuilder::<B>::new(
        "SELECT w.id, w.url, w.events, w.enabled, w.created_at_ms, w.created_by, \
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
        })
    })
}
