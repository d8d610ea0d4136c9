//! The audit log on PostgreSQL (D28): the SQL of `engine::audit` (the one
//! append path and the one-time chaining of pre-0008 rows), where the head
//! row's lock serialises appends across replicas, and the reads that
//! listing and verification need.

use sqlx::{PgConnection, PgPool, Row};

use crate::audit::chain::Link;
use crate::store::engine::{
    self,
    audit::{AuditTx, UnchainedRow},
};
use crate::store::rows::unchained_row;
use crate::store::{AuditEntry, AuditHead, StoreError, StoreResult};

/// Locks the chain head row until the transaction on `conn` ends, and
/// returns it. Every append goes through here, so appends from all
/// replicas queue on this one row and each extends the head it read. A
/// transaction that will append and also lock other rows may call it
/// first, to take the head before them.
pub(super) async fn lock_head(conn: &mut PgConnection) -> StoreResult<AuditHead> {
    let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::Corrupt("the audit_head row is missing".into()))?;
    Ok(AuditHead {
        seq: row.try_get("seq")?,
        hash: row.try_get("hash")?,
    })
}

/// One PostgreSQL transaction's connection as the audit log sees it.
pub(super) struct Audit<'a>(pub(super) &'a mut PgConnection);

impl AuditTx for Audit<'_> {
    async fn hold_head(&mut self) -> StoreResult<AuditHead> {
        lock_head(self.0).await
    }

    async fn insert_entry(&mut self, link: &Link<'_>, hash: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_log (seq, at_ms, actor_technician_id, actor_token_id, action, \
             subject, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(link.seq)
        .bind(link.at_ms)
        .bind(link.technician_id)
        .bind(link.token_id)
        .bind(link.action)
        .bind(link.subject)
        .bind(link.detail)
        .bind(link.prev_hash)
        .bind(hash)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn move_head(&mut self, seq: i64, hash: &str) -> StoreResult<()> {
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(seq)
            .bind(hash)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn legacy_chained(&mut self) -> StoreResult<bool> {
        let done: Option<String> =
            sqlx::query_scalar("SELECT value FROM fleet_meta WHERE key = $1")
                .bind(LEGACY_CHAINED)
                .fetch_optional(&mut *self.0)
                .await?;
        Ok(done.is_some())
    }

    async fn unchained(&mut self) -> StoreResult<Vec<UnchainedRow>> {
        let rows = sqlx::query(
            "SELECT id, at_ms, actor_technician_id, actor_token_id, action, subject, detail \
             FROM audit_log WHERE hash IS NULL ORDER BY id",
        )
        .fetch_all(&mut *self.0)
        .await?;
        rows.iter().map(unchained_row).collect()
    }

    async fn set_link(
        &mut self,
        id: i64,
        seq: i64,
        prev_hash: &str,
        hash: &str,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE audit_log SET seq = $1, prev_hash = $2, hash = $3 WHERE id = $4")
            .bind(seq)
            .bind(prev_hash)
            .bind(hash)
            .bind(id)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn mark_legacy_chained(&mut self, rows: usize) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO fleet_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(LEGACY_CHAINED)
        .bind(rows.to_string())
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }
}

/// Appends one entry on `conn`, which must be inside a transaction
/// ([`engine::audit::append`]).
pub(super) async fn append(
    conn: &mut PgConnection,
    entry: &AuditEntry,
    now_ms: i64,
) -> StoreResult<()> {
    engine::audit::append(&mut Audit(conn), entry, now_ms).await
}

/// The fleet_meta key set once the pre-0008 rows are chained.
const LEGACY_CHAINED: &str = "audit_legacy_chained";

/// Chains the rows written before migration 0008 once
/// ([`engine::audit::chain_unchained`]); done on open rather than in the
/// migration so the hash is computed by the same Rust code as every append.
pub(super) async fn chain_unchained(pool: &PgPool) -> StoreResult<u64> {
    let done: Option<String> = sqlx::query_scalar("SELECT value FROM fleet_meta WHERE key = $1")
        .bind(LEGACY_CHAINED)
        .fetch_optional(pool)
        .await?;
    if done.is_some() {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    let chained = engine::audit::chain_unchained(&mut Audit(&mut tx)).await?;
    tx.commit().await?;
    Ok(chained)
}
