//! The audit log (D28), the same SQL on both backends: the SQL of
//! `store::engine::audit` (the one append path and the one-time chaining
//! of pre-0008 rows), and the reads that listing and verification need.
//! Reading the head is a write to its row, so the head is held until the
//! transaction ends: a row lock on PostgreSQL, on which the appends of
//! every replica queue; SQLite's one write lock, already taken by
//! `BEGIN IMMEDIATE`.

use std::future::Future;

use sqlx::{Pool, QueryBuilder, Transaction};

use super::{Dialect, Value, push_values};
use crate::audit::chain::Link;
use crate::store::engine::audit::{self as engine, AuditTx, UnchainedRow};
use crate::store::rows::{audit_record_row, unchained_row};
use crate::store::{AuditEntry, AuditHead, AuditQuery, AuditRecord, StoreError, StoreResult};

/// The fleet_meta key set once the pre-0008 rows are chained.
const LEGACY_CHAINED: &str = "audit_legacy_chained";

/// One transaction's connection as the audit log sees it.
pub(crate) struct AuditConn<'a, B: Dialect>(pub(crate) &'a mut B::Connection);

/// Holds the chain head row until the transaction on `conn` ends, and
/// returns it. Every append goes through here, so each extends the head it
/// read. A transaction that will append and also lock other rows may call
/// it first, to take the head before them.
pub(crate) fn hold_head<B: Dialect>(conn: &mut B::Connection) -> super::SendFuture<'_, AuditHead> {
    let sql = QueryBuilder::new("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash");
    Box::pin(async move {
        B::optional_in(conn, sql, |r| {
            Ok(AuditHead {
                seq: r.int("seq")?,
                hash: r.text("hash")?,
            })
        })
        .await?
        .ok_or_else(|| StoreError::Corrupt("the audit_head row is missing".into()))
    })
}

/// Appends one entry on `conn`, which must be inside a transaction
/// ([`engine::append`]).
pub(crate) fn append<'a, B: Dialect>(
    conn: &'a mut B::Connection,
    entry: &'a AuditEntry,
    now_ms: i64,
) -> super::SendFuture<'a, ()> {
    Box::pin(async move { engine::append(&mut AuditConn::<B>(conn), entry, now_ms).await })
}

/// Chains the rows written before migration 0008 once
/// ([`engine::chain_unchained`]), in the transaction `begin` opens, unless
/// they are chained already. Done on open rather than in the migration, so
/// that the hash is computed by the same Rust code as every append.
pub(crate) fn chain_unchained<'a, B: Dialect>(
    pool: &'a Pool<B>,
    begin: impl Future<Output = StoreResult<Transaction<'static, B>>> + Send + 'a,
) -> super::SendFuture<'a, u64> {
    Box::pin(async move {
        let mut sql = QueryBuilder::new("SELECT value FROM fleet_meta WHERE key = ");
        B::text(&mut sql, LEGACY_CHAINED);
        if B::optional(pool, sql, |r| r.text("value")).await?.is_some() {
            return Ok(0);
        }
        let mut tx = begin.await?;
        let chained = engine::chain_unchained(&mut AuditConn::<B>(&mut tx)).await?;
        tx.commit().await?;
        Ok(chained)
    })
}

impl<B: Dialect> AuditTx for AuditConn<'_, B> {
    async fn hold_head(&mut self) -> StoreResult<AuditHead> {
        hold_head::<B>(self.0).await
    }

    async fn insert_entry(&mut self, link: &Link<'_>, hash: &str) -> StoreResult<()> {
        let mut sql = QueryBuilder::new(
            "INSERT INTO audit_log (seq, at_ms, actor_technician_id, actor_token_id, action, \
             subject, detail, prev_hash, hash) VALUES (",
        );
        push_values(
            &mut sql,
            &[
                Value::Int(link.seq),
                Value::Int(link.at_ms),
                Value::MaybeText(link.technician_id),
                Value::MaybeText(link.token_id),
                Value::Text(link.action),
                Value::Text(link.subject),
                Value::Text(link.detail),
                Value::Text(link.prev_hash),
                Value::Text(hash),
            ],
        );
        sql.push(")");
        B::execute_in(self.0, sql).await?;
        Ok(())
    }

    async fn move_head(&mut self, seq: i64, hash: &str) -> StoreResult<()> {
        let mut sql = QueryBuilder::new("UPDATE audit_head SET seq = ");
        B::int(&mut sql, seq);
        sql.push(", hash = ");
        B::text(&mut sql, hash);
        sql.push(" WHERE id = 1");
        B::execute_in(self.0, sql).await?;
        Ok(())
    }

    async fn legacy_chained(&mut self) -> StoreResult<bool> {
        let mut sql = QueryBuilder::new("SELECT value FROM fleet_meta WHERE key = ");
        B::text(&mut sql, LEGACY_CHAINED);
        Ok(B::optional_in(self.0, sql, |r| r.text("value"))
            .await?
            .is_some())
    }

    async fn unchained(&mut self) -> StoreResult<Vec<UnchainedRow>> {
        let sql = QueryBuilder::new(
            "SELECT id, at_ms, actor_technician_id, actor_token_id, action, subject, detail \
             FROM audit_log WHERE hash IS NULL ORDER BY id",
        );
        B::all_in(self.0, sql, |r| unchained_row(r)).await
    }

    async fn set_link(
        &mut self,
        id: i64,
        seq: i64,
        prev_hash: &str,
        hash: &str,
    ) -> StoreResult<()> {
        let mut sql = QueryBuilder::new("UPDATE audit_log SET seq = ");
        B::int(&mut sql, seq);
        sql.push(", prev_hash = ");
        B::text(&mut sql, prev_hash);
        sql.push(", hash = ");
        B::text(&mut sql, hash);
        sql.push(" WHERE id = ");
        B::int(&mut sql, id);
        B::execute_in(self.0, sql).await?;
        Ok(())
    }

    async fn mark_legacy_chained(&mut self, rows: usize) -> StoreResult<()> {
        let mut sql = QueryBuilder::new("INSERT INTO fleet_meta (key, value) VALUES (");
        push_values(
            &mut sql,
            &[Value::Text(LEGACY_CHAINED), Value::Text(&rows.to_string())],
        );
        sql.push(") ON CONFLICT (key) DO NOTHING");
        B::execute_in(self.0, sql).await?;
        Ok(())
    }
}

const SELECT: &str = "SELECT a.id, a.seq, a.at_ms, a.actor_technician_id, \
     t.name AS technician_name, a.actor_token_id, a.action, a.subject, a.detail, a.prev_hash, \
     a.hash FROM audit_log a LEFT JOIN technicians t ON t.id = a.actor_technician_id WHERE ";

/// Entries matching `query`, newest first.
pub(crate) fn list<'a, B: Dialect>(
    pool: &'a Pool<B>,
    query: &AuditQuery,
) -> impl Future<Output = StoreResult<Vec<AuditRecord>>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new(SELECT);
    sql.push("a.at_ms >= ");
    B::int(&mut sql, query.since_ms);
    if let Some(before) = query.before_id {
        sql.push(" AND a.id < ");
        B::int(&mut sql, before);
    }
    if let Some(text) = &query.subject_contains {
        sql.push(format!(" AND {}(a.subject, ", B::FIND));
        B::text(&mut sql, text);
        sql.push(") > 0");
    }
    if let Some(name) = &query.technician {
        sql.push(" AND t.name = ");
        B::text(&mut sql, name);
    }
    if let Some(prefix) = &query.action_prefix {
        // substr, not LIKE: a prefix with % or _ means those characters.
        // The length is cast: PostgreSQL has no substr(text, int, bigint).
        sql.push(" AND substr(a.action, 1, CAST(");
        B::int(
            &mut sql,
            i64::from(i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX)),
        );
        sql.push(" AS INTEGER)) = ");
        B::text(&mut sql, prefix);
    }
    sql.push(" ORDER BY a.id DESC LIMIT ");
    B::int(&mut sql, i64::from(query.limit));
    B::all(pool, sql, |r| audit_record_row(r))
}

/// Chained entries after `after_seq`, in chain order.
pub(crate) fn chain_page<'a, B: Dialect>(
    pool: &'a Pool<B>,
    after_seq: i64,
    limit: u32,
) -> impl Future<Output = StoreResult<Vec<AuditRecord>>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new(SELECT);
    sql.push("a.seq > ");
    B::int(&mut sql, after_seq);
    sql.push(" ORDER BY a.seq LIMIT ");
    B::int(&mut sql, i64::from(limit));
    B::all(pool, sql, |r| audit_record_row(r))
}

/// The head row; `None` only in a database whose migration did not run.
pub(crate) fn head<'a, B: Dialect>(
    pool: &'a Pool<B>,
) -> impl Future<Output = StoreResult<Option<AuditHead>>> + Send + 'a {
    let sql = QueryBuilder::<B>::new("SELECT seq, hash FROM audit_head WHERE id = 1");
    B::optional(pool, sql, |r| {
        Ok(AuditHead {
            seq: r.int("seq")?,
            hash: r.text("hash")?,
        })
    })
}

/// The smallest id of a row outside the chain (no seq or no hash), if any.
pub(crate) fn first_unchained<'a, B: Dialect>(
    pool: &'a Pool<B>,
) -> impl Future<Output = StoreResult<Option<Option<i64>>>> + Send + 'a {
    let sql = QueryBuilder::<B>::new(
        "SELECT MIN(id) AS first FROM audit_log WHERE seq IS NULL OR hash IS NULL",
    );
    B::optional(pool, sql, |r| r.opt_int("first"))
}
