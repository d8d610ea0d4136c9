//! The audit log on SQLite (D28): the SQL of `engine::audit` (the one
//! append path and the one-time chaining of pre-0008 rows), where a write
//! to the head row takes SQLite's one write lock before the head is read,
//! and the reads that listing and verification need.

use sqlx::{Row, SqliteConnection};

use crate::audit::chain::Link;
use crate::store::engine::{
    self,
    audit::{AuditTx, UnchainedRow},
};
use crate::store::rows::unchained_row;
use crate::store::{AuditEntry, AuditHead, StoreError, StoreResult};

/// One SQLite transaction's connection as the audit log sees it.
pub(super) struct Audit<'a>(pub(super) &'a mut SqliteConnection);

impl AuditTx for Audit<'_> {
    async fn hold_head(&mut self) -> StoreResult<AuditHead> {
        // A write that changes nothing comes first, so the write lock is
        // taken before the head is read.
        let head = sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
            .fetch_optional(&mut *self.0)
            .await?
            .ok_or_else(|| StoreError::Corrupt("the audit_head row is missing".into()))?;
        Ok(AuditHead {
            seq: head.try_get("seq")?,
            hash: head.try_get("hash")?,
        })
    }

    async fn insert_entry(&mut self, link: &Link<'_>, hash: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_log (seq, at_ms, actor_technician_id, actor_token_id, action, \
             subject, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        sqlx::query("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1")
            .bind(seq)
            .bind(hash)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn legacy_chained(&mut self) -> StoreResult<bool> {
        let done: Option<String> = sqlx::query_scalar("SELECT value FROM fleet_meta WHERE key = ?")
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
        sqlx::query("UPDATE audit_log SET seq = ?, prev_hash = ?, hash = ? WHERE id = ?")
            .bind(seq)
            .bind(prev_hash)
            .bind(hash)
            .bind(id)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn mark_legacy_chained(&mut self, rows: usize) -> StoreResult<()> {
        sqlx::query("INSERT INTO fleet_meta (key, value) VALUES (?, ?)")
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
    conn: &mut SqliteConnection,
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
pub(super) async fn chain_unchained(writer: &super::Writer) -> StoreResult<u64> {
    let done: Option<String> = sqlx::query_scalar("SELECT value FROM fleet_meta WHERE key = ?")
        .bind(LEGACY_CHAINED)
        .fetch_optional(writer.pool())
        .await?;
    if done.is_some() {
        return Ok(0);
    }
    let mut tx = super::begin_write(writer).await?;
    let chained = engine::audit::chain_unchained(&mut Audit(&mut tx)).await?;
    tx.commit().await?;
    Ok(chained)
}
