//! The audit log on SQLite (D28): the SQL of `engine::audit` (the one
//! append path and the one-time chaining of pre-0008 rows), where a write
//! to the head row takes SQLite's one write lock before the head is read,
//! and the reads that listing and verification need.

use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use crate::audit::chain::Link;
use crate::store::engine::{
    self,
    audit::{AuditTx, UnchainedRow},
};
use crate::store::rows::{audit_record_row, unchained_row};
use crate::store::{AuditEntry, AuditHead, AuditQuery, AuditRecord, StoreError, StoreResult};

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

const COLUMNS: &str = "a.id, a.seq, a.at_ms, a.actor_technician_id, t.name AS technician_name, \
     a.actor_token_id, a.action, a.subject, a.detail, a.prev_hash, a.hash \
     FROM audit_log a LEFT JOIN technicians t ON t.id = a.actor_technician_id";

/// Entries matching `query`, newest first.
pub(super) async fn list(pool: &SqlitePool, query: &AuditQuery) -> StoreResult<Vec<AuditRecord>> {
    let mut sql = QueryBuilder::<Sqlite>::new(format!("SELECT {COLUMNS} WHERE a.at_ms >= "));
    sql.push_bind(query.since_ms);
    if let Some(before) = query.before_id {
        sql.push(" AND a.id < ").push_bind(before);
    }
    if let Some(text) = &query.subject_contains {
        sql.push(" AND instr(a.subject, ")
            .push_bind(text.clone())
            .push(") > 0");
    }
    if let Some(name) = &query.technician {
        sql.push(" AND t.name = ").push_bind(name.clone());
    }
    if let Some(prefix) = &query.action_prefix {
        // substr, not LIKE: a prefix with % or _ means those characters.
        sql.push(" AND substr(a.action, 1, ")
            .push_bind(i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX))
            .push(") = ")
            .push_bind(prefix.clone());
    }
    sql.push(" ORDER BY a.id DESC LIMIT ")
        .push_bind(i64::from(query.limit));
    let rows = sql.build().fetch_all(pool).await?;
    rows.iter().map(audit_record_row).collect()
}

/// Chained entries after `after_seq`, in chain order.
pub(super) async fn chain_page(
    pool: &SqlitePool,
    after_seq: i64,
    limit: u32,
) -> StoreResult<Vec<AuditRecord>> {
    let sql = format!("SELECT {COLUMNS} WHERE a.seq > ? ORDER BY a.seq LIMIT ?");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    rows.iter().map(audit_record_row).collect()
}

/// The head row.
pub(super) async fn head(pool: &SqlitePool) -> StoreResult<AuditHead> {
    let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| StoreError::Corrupt("the audit_head row is missing".into()))?;
    Ok(AuditHead {
        seq: row.try_get("seq")?,
        hash: row.try_get("hash")?,
    })
}

/// The smallest id of a row outside the chain (no seq or no hash), if any.
pub(super) async fn first_unchained(pool: &SqlitePool) -> StoreResult<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT MIN(id) FROM audit_log WHERE seq IS NULL OR hash IS NULL")
            .fetch_one(pool)
            .await?,
    )
}
