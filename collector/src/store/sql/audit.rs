//! The audit log's reads, the same SQL on both backends. The one append
//! path is `store::engine::audit`.

use std::future::Future;

use sqlx::{Pool, QueryBuilder};

use super::Dialect;
use crate::store::rows::audit_record_row;
use crate::store::{AuditHead, AuditQuery, AuditRecord, StoreResult};

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
        sql.push(" AND substr(a.action, 1, ");
        B::int(
            &mut sql,
            i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX),
        );
        sql.push(") = ");
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
