//! Webhook policy and outbox on PostgreSQL. SKELETON: stubs with the SQLite
//! module's signatures, to be replaced by the port of `sqlite/webhooks.rs`.

use sqlx::PgPool;

use super::pending;
use crate::store::{Delivery, DeliveryOutcome, NewWebhook, StoreResult, WebhookStatus};

pub async fn add(_pool: &PgPool, _hook: &NewWebhook, _now_ms: i64) -> StoreResult<i64> {
    Err(pending("webhooks::add"))
}

pub async fn remove(_pool: &PgPool, _id: i64) -> StoreResult<bool> {
    Err(pending("webhooks::remove"))
}

pub async fn set_enabled(_pool: &PgPool, _id: i64, _enabled: bool) -> StoreResult<bool> {
    Err(pending("webhooks::set_enabled"))
}

pub async fn list(_pool: &PgPool) -> StoreResult<Vec<WebhookStatus>> {
    Err(pending("webhooks::list"))
}

pub async fn claim(
    _pool: &PgPool,
    _now_ms: i64,
    _lease_ms: i64,
    _limit: u32,
) -> StoreResult<Vec<Delivery>> {
    Err(pending("webhooks::claim"))
}

pub async fn purge(_pool: &PgPool, _before_ms: i64) -> StoreResult<u64> {
    Err(pending("webhooks::purge"))
}

pub async fn record(
    _pool: &PgPool,
    _id: i64,
    _outcome: &DeliveryOutcome,
    _now_ms: i64,
) -> StoreResult<()> {
    Err(pending("webhooks::record"))
}
