//! The audit hash chain on PostgreSQL. SKELETON: stubs with the SQLite
//! module's signatures, to be replaced by the port of `sqlite/audit.rs`.

use sqlx::{PgConnection, PgPool};

use super::pending;
use crate::store::{AuditEntry, AuditHead, AuditQuery, AuditRecord, StoreResult};

pub(super) async fn append(
    _conn: &mut PgConnection,
    _entry: &AuditEntry,
    _now_ms: i64,
) -> StoreResult<()> {
    Err(pending("audit::append"))
}

pub(super) async fn chain_unchained(_pool: &PgPool) -> StoreResult<u64> {
    Ok(0)
}

pub(super) async fn list(_pool: &PgPool, _query: &AuditQuery) -> StoreResult<Vec<AuditRecord>> {
    Err(pending("audit::list"))
}

pub(super) async fn chain_page(
    _pool: &PgPool,
    _after_seq: i64,
    _limit: u32,
) -> StoreResult<Vec<AuditRecord>> {
    Err(pending("audit::chain_page"))
}

pub(super) async fn head(_pool: &PgPool) -> StoreResult<AuditHead> {
    Err(pending("audit::head"))
}

pub(super) async fn first_unchained(_pool: &PgPool) -> StoreResult<Option<i64>> {
    Err(pending("audit::first_unchained"))
}
