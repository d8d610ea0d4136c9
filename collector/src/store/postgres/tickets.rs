//! Tickets on PostgreSQL. SKELETON: stubs with the SQLite module's
//! signatures, to be replaced by the port of `sqlite/tickets.rs`.

use sqlx::{PgPool, Postgres, Transaction};

use super::pending;
use crate::rules::events::ChangeEvent;
use crate::rules::policy::Policy;
use crate::rules::priority::Priority;
use crate::store::{
    Reading, StoreResult, TicketChange, TicketQuery, TicketRefusal, TicketRow, WorklogEntry,
};

type Tx = Transaction<'static, Postgres>;

pub async fn evaluate(
    _tx: &mut Tx,
    _policy: &Policy,
    _host: &str,
    _readings: &[Reading],
    _sample_at_ms: i64,
    _now_ms: i64,
) -> StoreResult<()> {
    Err(pending("tickets::evaluate"))
}

pub async fn evaluate_changes(
    _tx: &mut Tx,
    _policy: &Policy,
    _host: &str,
    _events: &[ChangeEvent],
    _observed_at_ms: i64,
    _now_ms: i64,
) -> StoreResult<()> {
    Err(pending("tickets::evaluate_changes"))
}

#[allow(clippy::too_many_arguments)]
pub async fn open_user_issue(
    _tx: &mut Tx,
    _policy: &Policy,
    _host: &str,
    _text: &str,
    _os_user: &str,
    _health: &serde_json::Value,
    _reported_at_ms: i64,
    _now_ms: i64,
) -> StoreResult<i64> {
    Err(pending("tickets::open_user_issue"))
}

pub async fn advance_timers(_pool: &PgPool, _policy: &Policy, _now_ms: i64) -> StoreResult<u64> {
    Err(pending("tickets::advance_timers"))
}

pub async fn list(_pool: &PgPool, _query: &TicketQuery) -> StoreResult<Vec<TicketRow>> {
    Err(pending("tickets::list"))
}

pub async fn create(
    _pool: &PgPool,
    _policy: &Policy,
    _host: &str,
    _title: &str,
    _priority: Option<Priority>,
    _author: &str,
    _now_ms: i64,
) -> StoreResult<TicketRow> {
    Err(pending("tickets::create"))
}

pub async fn get(_pool: &PgPool, _id: i64) -> StoreResult<Option<(TicketRow, Vec<WorklogEntry>)>> {
    Err(pending("tickets::get"))
}

pub async fn update(
    _pool: &PgPool,
    _policy: &Policy,
    _id: i64,
    _change: &TicketChange,
    _author: &str,
    _now_ms: i64,
) -> StoreResult<Result<TicketRow, TicketRefusal>> {
    Err(pending("tickets::update"))
}

pub async fn advance_sla(_pool: &PgPool, _policy: &Policy, _now_ms: i64) -> StoreResult<u64> {
    Err(pending("tickets::advance_sla"))
}
